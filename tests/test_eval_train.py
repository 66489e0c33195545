"""The evaluation training's modes (engine/eval_train.py): fused and batched train the nets eager trains, within
float rounding (losses step by step, the trained weights, the predictions), each batched training as it would
alone; the mode choice, its override and the fall-back when torch.compile fails."""
from __future__ import annotations

import logging

import pytest
import torch

from engine import data, eval_train, evaluate
from engine.augment import DSA
from engine.errors import InvalidArgument

CPU = torch.device("cpu")
STEPS = 20


def _jobs(n: int = 3) -> list[eval_train.Job]:
    """n trainings on different tiny sets (2 real images per class) with different seeds."""
    train = data.load_split("colored-digits", 0.05, "train", 0)
    out = []
    for i in range(n):
        x, y = evaluate.random_subset(train, 2, seed=i)
        out.append(eval_train.Job(x[..., ::2, ::2].contiguous(), y, 10 + i))  # 16 x 16: cheaper, same code
    return out


def _cfg():
    return evaluate.get_preset("quick", epochs=STEPS, width=8)  # 20 images, one batch: one step an epoch


def _train(jobs, mode: str):
    """The nets, the tag of what ran and each training's loss at every step (one list per job)."""
    if mode == "batched":  # the stack reports the mean of its nets' losses: record each net's own instead
        seen: list[list[float]] = []
        real = eval_train._stacked_loss

        def per_net(params, x, y):
            with torch.no_grad():
                seen.append([float(real(_one(params, i, len(y)), x[i:i + 1], y[i:i + 1])) for i in range(len(y))])
            return real(params, x, y)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(eval_train, "_stacked_loss", per_net)
            m.setitem(eval_train._compile_state, "ok", False)  # the stack without compile: its arithmetic
            nets, tag = eval_train.train_jobs(jobs, _cfg(), CPU, num_classes=10, flip=False, mode=mode)
        return nets, tag, [list(col) for col in zip(*seen)]
    nets, losses = [], []
    for job in jobs:  # one training: its progress event each epoch (= each step here) carries its loss
        events = []
        trained, tag = eval_train.train_jobs([job], _cfg(), CPU, num_classes=10, flip=False, mode=mode,
                                             progress=events.append)
        nets.append(trained[0])
        losses.append([e.loss for e in events])
    return nets, tag, losses


def _one(params, i: int, s: int) -> list[torch.Tensor]:
    """Net i's slice of the stacked parameters, as a stack of one."""
    out = []
    for k, p in enumerate(params):
        out.append(p[i:i + 1] if k >= len(params) - 2 else p.chunk(s)[i])
    return out


def _same_nets(a, b, test_x) -> None:
    for na, nb in zip(a, b):
        for (name, pa), pb in zip(na.state_dict().items(), nb.state_dict().values()):
            assert torch.allclose(pa, pb, rtol=1e-3, atol=1e-4), name
        assert torch.equal(evaluate.predict(na, test_x), evaluate.predict(nb, test_x))


def test_batched_trains_each_net_as_it_trains_alone() -> None:
    """Three trainings stacked as one model: each keeps its own initial weights, batch order, DSA draws and
    schedule, so its losses, weights and predictions are those of its eager training (within float rounding)."""
    jobs = _jobs(3)
    eager, tag_e, loss_e = _train(jobs, "eager")
    batched, tag_b, loss_b = _train(jobs, "batched")
    assert (tag_e, tag_b) == ("eager", "batched-eager")
    assert len(loss_b) == 3 and all(len(seq) == STEPS for seq in loss_b + loss_e)
    for le, lb in zip(loss_e, loss_b):
        assert lb == pytest.approx(le, rel=1e-4, abs=1e-5)
    assert loss_e[0] != pytest.approx(loss_e[1], rel=1e-3)  # the trainings do differ from one another
    _same_nets(eager, batched, torch.cat([j.images for j in jobs]))


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_fused_and_compiled_batched_match_eager() -> None:
    """torch.compile's fused step (once per shape: ~20-35 s on 2 cores) gives eager's losses within float
    rounding over 20 steps and the same predictions; so does the compiled stack. One thread: with two, the
    reductions' order differs from run to run and the weights drift by ~2e-4 over the 20 steps."""
    jobs = _jobs(2)
    eager, _, loss_e = _train(jobs, "eager")
    fused, tag_f, loss_f = _train(jobs, "fused")
    assert tag_f == "fused"
    for le, lf in zip(loss_e, loss_f):
        assert lf == pytest.approx(le, rel=1e-4, abs=1e-5)
    _same_nets(eager, fused, torch.cat([j.images for j in jobs]))
    nets, tag = eval_train.train_jobs(jobs, _cfg(), CPU, num_classes=10, flip=False, mode="batched")
    assert tag == "batched"
    _same_nets(eager, nets, torch.cat([j.images for j in jobs]))


def test_augment_many_gives_each_batch_its_own_draw() -> None:
    dsa = DSA(flip=True)
    gens = [torch.Generator().manual_seed(s) for s in range(12)]
    batches = [torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(100 + i)) for i in range(12)]
    params = [dsa.sample(5, g) for g in gens]
    assert len({p.family for p in params}) > 1 and len({p.family for p in params}) < len(params)  # shared families
    alone = [dsa.apply(b, p) for b, p in zip(batches, params)]
    for a, b in zip(alone, eval_train.augment_many(batches, params, dsa)):
        assert torch.allclose(a, b, atol=1e-6)


COSTS = {"eval_image_epoch": {"eager": 2e-4, "fused": 1.5e-4, "batched": 2e-4}, "eval_cost_images": 50,
         "eval_compile_warm": 4.0, "eval_compile_cold": 15.0}  # fusing saves 2.5 ms a step; a warm compile, 4 s


def test_choose_mode_by_device_size_and_override(monkeypatch) -> None:
    monkeypatch.delenv(eval_train.MODE_ENV, raising=False)
    monkeypatch.setitem(eval_train._compile_state, "ok", True)
    cuda = torch.device("cuda")
    assert eval_train.choose_mode(cuda, 50, 18, 300, costs=COSTS) == "batched"
    assert eval_train.choose_mode(cuda, 50, 1, 300, costs=COSTS) == "eager"
    # the CPU fuses when the saving (trainings x steps x 2.5 ms) beats a warm compile (4 s): 1,600 steps and up
    assert eval_train.choose_mode(CPU, 50, 18, 300, costs=COSTS) == "fused"  # the bundled audit: 13.5 s saved
    assert eval_train.choose_mode(CPU, 50, 6, 300, costs=COSTS) == "fused"  # 4.5 s saved
    assert eval_train.choose_mode(CPU, 50, 5, 300, costs=COSTS) == "eager"  # 3.75 s: the compile would cost more
    assert eval_train.choose_mode(CPU, 50, 3, 300, costs=COSTS) == "eager"  # a one-method Distill run
    assert eval_train.choose_mode(CPU, 50, 1, 2, costs=COSTS) == "eager"  # the tiny preset
    for threads in (1, 2):  # stacking measured slower than fused on the CPU: never chosen there, at any size
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        assert eval_train.choose_mode(CPU, 10, 18, 300, costs=COSTS) == "fused"
    assert eval_train.choose_mode(CPU, 10, 18, 300, norm="batchnorm", costs=COSTS) == "fused"
    slower = {**COSTS, "eval_image_epoch": {"eager": 1e-4, "fused": 2e-4, "batched": 2e-4}}
    assert eval_train.choose_mode(CPU, 500, 18, 3000, costs=slower) == "eager"  # fusing that saves nothing
    monkeypatch.setenv(eval_train.MODE_ENV, "eager")
    assert eval_train.choose_mode(CPU, 50, 18, 300, costs=COSTS) == "eager"
    monkeypatch.setenv(eval_train.MODE_ENV, "batched")
    assert eval_train.choose_mode(CPU, 50, 1, 2, costs=COSTS) == "batched"
    monkeypatch.setenv(eval_train.MODE_ENV, "fast")
    with pytest.raises(InvalidArgument, match="DDAUDIT_EVAL_MODE"):
        eval_train.choose_mode(CPU, 50, 18, 300, costs=COSTS)
    monkeypatch.setenv(eval_train.MODE_ENV, "fused")
    monkeypatch.setitem(eval_train._compile_state, "ok", False)
    assert eval_train.choose_mode(CPU, 50, 18, 300, costs=COSTS) == "eager"  # no compiler here: fused is not possible


def test_the_mode_choice_reads_the_measured_costs_file(monkeypatch) -> None:
    """The shipped engine/costs.json: the bundled audit's 18 trainings fuse, a one-method quick run does not."""
    monkeypatch.delenv(eval_train.MODE_ENV, raising=False)
    monkeypatch.setitem(eval_train._compile_state, "ok", True)
    c = eval_train.load_costs()
    assert c["eval_cost_images"] == eval_train.COST_IMAGES
    assert eval_train.choose_mode(CPU, 50, 18, 300) == "fused"
    assert eval_train.choose_mode(CPU, 50, 3, 300) == "eager"


def test_a_failing_compile_falls_back_to_eager_once(monkeypatch, caplog) -> None:
    """A compiler that fails (no C++ compiler, ...): one logged line, the training reruns eagerly from its start
    and gives exactly eager's net; later trainings do not try to compile again."""
    monkeypatch.setattr(eval_train, "_compile_state", {})
    calls = []

    def broken():
        def fn(*a, **k):
            calls.append(1)
            raise torch._inductor.exc.CppCompileError(["no-such-cc"], "no-such-cc: not found")
        return fn
    monkeypatch.setattr(eval_train, "_compiled_module_loss", broken)
    jobs = _jobs(1)
    with caplog.at_level(logging.WARNING, logger="ddaudit"):
        nets, tag = eval_train.train_jobs(jobs, _cfg(), CPU, num_classes=10, flip=False, mode="fused")
        again, tag2 = eval_train.train_jobs(jobs, _cfg(), CPU, num_classes=10, flip=False, mode="fused")
    assert (tag, tag2) == ("eager", "eager") and len(calls) == 1
    notices = [r for r in caplog.records if "torch.compile is unavailable" in r.getMessage()]
    assert len(notices) == 1 and "CppCompileError" in notices[0].getMessage()
    ref, _ = eval_train.train_jobs(jobs, _cfg(), CPU, num_classes=10, flip=False, mode="eager")
    for a, b in zip(nets[0].state_dict().values(), ref[0].state_dict().values()):
        assert torch.equal(a, b)
    assert not eval_train.compile_available()


def test_evaluate_many_matches_evaluate_synthetic_per_set(fresh_home) -> None:
    """All sets x seeds at once give each set what evaluating it alone gives, one cache entry per (set, seed)."""
    train, test = data.load_pair("colored-digits", 0.05, 0)
    cfg = evaluate.get_preset("quick", epochs=2, width=8)
    sets = {"a": evaluate.random_subset(train, 2, 0), "b": evaluate.random_subset(train, 2, 1),
            "c": evaluate.random_subset(train, 3, 2)}  # two shapes
    many = evaluate.evaluate_many(sets, test, cfg, [0, 1], device="cpu", flip=False, mode="eager")
    assert list(many) == ["a", "b", "c"]
    assert len(list(evaluate.cache.cache_dir("evaluations").glob("*.json"))) == 6
    for name, (x, y) in sets.items():
        alone = evaluate.evaluate_synthetic(x, y, test, cfg, [0, 1], device="cpu", flip=False, mode="eager",
                                            use_cache=False)
        assert alone["per_seed"] == many[name]["per_seed"] and many[name]["mode"] == ["eager"]
    with pytest.raises(InvalidArgument):
        evaluate.evaluate_many(sets, test, cfg, [0], device="cpu", mode="turbo")


@pytest.mark.slow
def test_warm_up_compiles_into_the_homes_kernel_cache(fresh_home) -> None:
    """make install's warm-up: the Distill form's default evaluation step compiled into DDAUDIT_HOME."""
    seconds = evaluate.warm_up()
    assert seconds > 0 and any((fresh_home / "cache" / "kernels").rglob("*"))
