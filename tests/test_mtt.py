"""MTT (trajectory matching): the loss and the learnable step size by hand, each remedy's expert objective on
hand-computed inputs, the expert cache (hit, miss, corruption, resume), and a resumed run bit-identical."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine import cache, cli, distill as D
from engine.data import BiasedSplit
from engine.distill import experts as X
from engine.distill import objectives as M
from engine.distill.backbones import mtt
from engine.distill.methods import REGISTRY
from engine.distill.objectives import ExpertData
from engine.distill.sampler import GroupPools
from engine.errors import Cancelled, InvalidArgument
from engine.nets import ConvNet, ConvNetConfig

from .test_distill import TINY, _random_weights, _subset, tiny  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_MTT = replace(TINY, algorithm="mtt", iterations=3, lr_img=100.0, checkpoint_every=1, batch_train=16,
                   options=mtt.MTTOptions(num_experts=2, expert_train_epochs=2, syn_steps=2, expert_epochs=1,
                                          max_start_epoch=2))


# --------------------------------------------------------------------------- the loss and the step size

def test_trajectory_loss_is_zero_at_the_target_and_normalised_by_the_experts_move() -> None:
    start, target = torch.zeros(2), torch.tensor([3.0, 4.0])
    assert float(mtt.trajectory_loss(target.clone(), start, target)) == 0.0
    assert float(mtt.trajectory_loss(start.clone(), start, target)) == pytest.approx(1.0)  # did not move
    assert float(mtt.trajectory_loss(torch.tensor([3.0, 0.0]), start, target)) == pytest.approx(16 / 25)
    # the normalisation makes it scale-free: the same geometry ten times larger has the same loss
    assert float(mtt.trajectory_loss(torch.tensor([30.0, 0.0]), start * 10, target * 10)) == pytest.approx(16 / 25)


def _student(dtype: torch.dtype = torch.float64):
    torch.manual_seed(0)
    net = ConvNet(ConvNetConfig(channels=1, num_classes=2, image_size=32, width=2, depth=1)).to(dtype)
    images = torch.randn(4, 1, 32, 32, dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    theta0 = X.flat_params(net).to(dtype)
    plan = mtt.StudentPlan(0, 0, [torch.tensor([0, 2]), torch.tensor([1, 3]), torch.arange(4)], [None] * 3)
    return net, images, labels, theta0, plan


def test_the_learnable_step_size_gets_the_gradient_of_the_unrolled_loss() -> None:
    net, images, labels, theta0, plan = _student()
    target = theta0 + 0.05 * torch.randn(theta0.shape, dtype=theta0.dtype, generator=torch.Generator().manual_seed(1))

    def loss_at(lr: float, keep_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        syn_lr = torch.tensor(lr, dtype=torch.float64, requires_grad=True)
        end = mtt.unroll(net, theta0, images, labels, syn_lr, plan, None, torch.contiguous_format)
        return mtt.trajectory_loss(end, theta0, target), syn_lr

    loss, syn_lr = loss_at(0.01)
    loss.backward()
    assert syn_lr.grad is not None and float(syn_lr.grad) != 0.0
    h = 1e-6
    numeric = (float(loss_at(0.01 + h)[0].detach()) - float(loss_at(0.01 - h)[0].detach())) / (2 * h)
    assert float(syn_lr.grad) == pytest.approx(numeric, rel=1e-4)
    assert images.grad is not None and images.grad.abs().sum() > 0  # the pixels learn through every step


def test_each_unrolled_step_is_plain_sgd_on_the_batch() -> None:
    net, images, labels, theta0, plan = _student()
    lr = torch.tensor(0.1, dtype=torch.float64)
    end = mtt.unroll(net, theta0, images, labels, lr, plan, None, torch.contiguous_format)
    theta = theta0.clone()
    for idx in plan.batches:  # by hand: load the vector, take one torch SGD step
        X.load_flat(net, theta)
        net.zero_grad()
        F.cross_entropy(net(images[idx].detach()), labels[idx]).backward()
        theta = theta - 0.1 * torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    assert torch.allclose(end.detach(), theta, atol=1e-12)


# --------------------------------------------------------------------------- each remedy's expert objective

TARGETS, GROUPS = torch.tensor([0, 0, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 1, 0, 0])
KDE_W = torch.tensor([1.0, 1.0, 2.0, 4.0, 1.0, 3.0])


def _objective(method: str, groups=GROUPS, weights=KDE_W, sampling="importance"):
    return REGISTRY[method].mtt_objective(ExpertData(TARGETS, groups, weights, 2, 2, sampling))


def _expected_sum(obj) -> torch.Tensor:
    """The objective's expectation as per-image weights summing to N: draws x loss weights."""
    n = len(TARGETS)
    p = obj.draws if obj.draws is not None else torch.full((n,), 1 / n, dtype=torch.float64)
    e = p * obj.loss_weights.double()
    return e / e.sum() * n


def test_each_remedys_expert_objective_on_hand_computed_inputs() -> None:
    # class 0: groups 0 (3 images) and 1 (1 image); class 1: group 0 only
    balance = torch.tensor([4 / 6, 4 / 6, 4 / 6, 2.0, 1.0, 1.0], dtype=torch.float64)  # n_c / (G_c n_cg)
    kde = torch.tensor([0.5, 0.5, 1.0, 2.0, 0.5, 1.5], dtype=torch.float64)          # n_c w_i / sum_c w
    v = _objective("vanilla")
    assert torch.equal(v.loss_weights, torch.ones(6)) and v.draws is None
    f = _objective("fairdd")
    assert torch.allclose(f.loss_weights.double(), balance) and f.draws is None          # reweighting
    b = _objective("balanced")
    assert torch.equal(b.loss_weights, torch.ones(6)) and torch.allclose(b.draws, balance / 6)  # resampling
    k = _objective("kde")
    assert torch.equal(k.loss_weights, torch.ones(6)) and torch.allclose(k.draws, kde / 6)      # importance draws
    kw = _objective("kde", sampling="weighted")
    assert torch.allclose(kw.loss_weights.double(), kde) and kw.draws is None
    # fairdd and balanced (and cobra) minimise the same expectation; kde's two samplings too
    assert torch.allclose(_expected_sum(f), _expected_sum(b)) and torch.allclose(_expected_sum(f), balance)
    assert torch.allclose(_expected_sum(k), _expected_sum(kw))
    c = _objective("cobra")  # the balance is computed in each batch, from the batch's own groups
    assert torch.equal(c.loss_weights, torch.ones(6)) and c.draws is None and torch.equal(c.batch_groups, GROUPS)
    assert torch.allclose(M.balance(TARGETS, GROUPS, 2, 2), balance)  # a batch of the whole split: fairdd's
    rows = torch.tensor([0, 1, 3])  # class 0 with 2 images of group 0 and 1 of group 1: halves per group
    assert torch.allclose(M.balance(TARGETS[rows], GROUPS[rows], 2, 2), torch.tensor([0.75, 0.75, 1.5],
                                                                                   dtype=torch.float64))
    rows = torch.tensor([0, 2, 4])  # one group per class in this batch: plain mean, however rare elsewhere
    assert torch.allclose(M.balance(TARGETS[rows], GROUPS[rows], 2, 2), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("method", D.METHODS)
def test_one_group_or_uniform_weights_give_vanillas_objective(method: str) -> None:
    one_group, uniform = torch.zeros(6, dtype=torch.long), torch.ones(6)
    for sampling in ("importance", "weighted"):
        obj = _objective(method, groups=one_group, weights=uniform, sampling=sampling)
        assert torch.allclose(_expected_sum(obj), torch.ones(6, dtype=torch.float64))
        assert torch.equal(obj.loss_weights, torch.ones(6))
        assert obj.draws is None or torch.allclose(obj.draws, torch.full((6,), 1 / 6, dtype=torch.float64))
        if obj.batch_groups is not None:  # cobra: any batch of one group is weighted plainly
            assert torch.equal(M.balance(TARGETS[:5], obj.batch_groups[:5], 2, 2), torch.ones(5, dtype=torch.float64))


def test_the_batch_loss_weights_each_image() -> None:
    logits, y = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])
    assert torch.allclose(X.batch_loss(logits, y, torch.ones(4)), F.cross_entropy(logits, y))
    ce = F.cross_entropy(logits, y, reduction="none")
    v = torch.tensor([1.0, 0.0, 3.0, 0.0])
    assert torch.allclose(X.batch_loss(logits, y, v), (ce[0] + 3 * ce[2]) / 4)


# --------------------------------------------------------------------------- the expert cache

def _expert_files(home: Path) -> list[Path]:
    return sorted((home / "cache" / "experts").glob("*/expert_*.safetensors"))


def _run(split: BiasedSplit, cfg=TINY_MTT, methods=("vanilla",), **kw):
    events: list = []
    sets = D.distill(split, cfg, methods, progress=events.append, **kw)
    return sets, [e for e in events if e.stage == X.EXPERT_STAGE]


def test_expert_cache_miss_hit_and_corruption(tiny: BiasedSplit, fresh_home: Path) -> None:
    first, ev = _run(tiny)
    files = _expert_files(fresh_home)
    assert len(files) == TINY_MTT.options.num_experts and not ev[0].cached
    assert ev[-1].step == TINY_MTT.options.num_experts * TINY_MTT.options.expert_train_epochs  # every epoch trained
    times = [f.stat().st_mtime_ns for f in files]
    again, ev = _run(tiny)                                   # hit: nothing trained, nothing rewritten
    assert ev[0].cached and len(ev) == 1 and [f.stat().st_mtime_ns for f in files] == times
    assert torch.equal(again["vanilla"].images, first["vanilla"].images)
    raw = bytearray(files[1].read_bytes())
    raw[-5] ^= 0xFF
    files[1].write_bytes(bytes(raw))                         # corruption: that expert alone is trained again
    third, ev = _run(tiny)
    assert ev[-1].step == TINY_MTT.options.expert_train_epochs and files[0].stat().st_mtime_ns == times[0]
    assert torch.equal(third["vanilla"].images, first["vanilla"].images)  # the same expert, rebuilt


def test_methods_with_one_objective_share_experts(tiny: BiasedSplit, fresh_home: Path) -> None:
    one = _subset(tiny, torch.arange(len(tiny)), torch.zeros(len(tiny), dtype=torch.long))
    _run(one, methods=("vanilla", "fairdd"))  # one attribute group: fairdd's objective is vanilla's
    assert len({f.parent for f in _expert_files(fresh_home)}) == 1
    _run(tiny, methods=("vanilla", "fairdd"))
    assert len({f.parent for f in _expert_files(fresh_home)}) == 2  # real groups: fairdd's own experts


def test_a_killed_expert_training_resumes_to_the_same_trajectory(tiny: BiasedSplit, tmp_path: Path) -> None:
    cfg = TINY_MTT.replace(expert_train_epochs=3)
    setup, _ = _built(tiny, cfg)
    obj = REGISTRY["vanilla"].mtt_objective(ExpertData(tiny.targets, tiny.attributes, None, 4, 10))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    X.train_expert(setup, obj, cfg, 0, whole)
    calls = iter([False, False, True])
    with pytest.raises(Cancelled):
        X.train_expert(setup, obj, cfg, 0, cut, should_stop=lambda: next(calls))
    assert list(cut.glob("*.partial.safetensors")) and not list(cut.glob("expert_0000.safetensors"))
    X.train_expert(setup, obj, cfg, 0, cut)
    assert torch.equal(cache.load_tensors(whole / "expert_0000.safetensors")[0]["trajectory"],
                       cache.load_tensors(cut / "expert_0000.safetensors")[0]["trajectory"])
    assert not list(cut.glob("*.partial.safetensors"))


def _built(split: BiasedSplit, cfg):
    from engine.distill import loop
    mean, std = loop.channel_stats(split.images)
    run, _ = loop.build(split, cfg, ("vanilla",), None, mean, std, torch.device("cpu"))
    return X.ExpertSetup(run.images, run.targets, run.mean, run.std, run.net.cfg, run.dsa, run.fmt, run.device), run


# --------------------------------------------------------------------------- the run

def test_resume_is_bit_identical_and_the_step_size_is_kept(tiny: BiasedSplit, tmp_path: Path) -> None:
    w = _random_weights(tiny)
    methods = ("vanilla", "kde", "fairdd")
    whole = D.distill(tiny, TINY_MTT, methods, weights=w, checkpoint_dir=tmp_path / "a")
    calls = iter([False, False, True])
    with pytest.raises(Cancelled):
        D.distill(tiny, TINY_MTT, methods, weights=w, checkpoint_dir=tmp_path / "b", should_stop=lambda: next(calls))
    resumed = D.distill(tiny, TINY_MTT, methods, weights=w, checkpoint_dir=tmp_path / "b")
    for m in methods:
        assert torch.equal(whole[m].images, resumed[m].images)
        assert whole[m].meta["syn_lr"] == resumed[m].meta["syn_lr"] != TINY_MTT.options.lr_teacher  # learned, then kept
        assert whole[m].loss_history == resumed[m].loss_history
    assert not torch.equal(whole["vanilla"].images, whole["fairdd"].images)  # own experts, own sets


def test_mtt_settings_are_checked_and_refused_elsewhere(tiny: BiasedSplit, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(InvalidArgument, match="max_start_epoch"):
        D.config_for("quick", "mtt", 10, max_start_epoch=10, expert_train_epochs=6)
    with pytest.raises(InvalidArgument):
        D.config_for("quick", "mtt", 10, syn_steps=0)
    assert D.config_for("quick", "mtt", 10).key()["syn_steps"] == D.default_config("quick", "mtt").options.syn_steps
    assert "syn_steps" not in D.config_for("quick", "dm", 10).key()  # DM/DC/IDC keys (run ids) unchanged
    rc = cli.main(["distill", "--conflict-ratio", "0.1", "--syn-steps", "3", "--out", "/tmp/never"])
    err = capsys.readouterr().err
    assert rc != 0 and "--syn-steps is a setting of MTT" in err and "Traceback" not in err


def test_cobra_experts_weigh_groups_within_each_batch(tiny: BiasedSplit, tmp_path: Path) -> None:
    """With one batch per epoch the batch is the split: cobra's per-batch barycenter weights are fairdd's exact
    group weights, so the two experts are bit-identical; with smaller batches they differ."""
    d = ExpertData(tiny.targets, tiny.attributes, None, 4, 10)
    objective = {m: REGISTRY[m].mtt_objective(d) for m in ("fairdd", "cobra")}
    for batch, same in ((len(tiny), True), (8, False)):
        cfg = replace(TINY_MTT, batch_train=batch)
        setup, _ = _built(tiny, cfg)
        got = {}
        for m, obj in objective.items():
            folder = tmp_path / f"{m}-{batch}"
            folder.mkdir()
            X.train_expert(setup, obj, cfg, 0, folder)
            got[m] = cache.load_tensors(folder / "expert_0000.safetensors")[0]["trajectory"]
        assert torch.equal(got["fairdd"], got["cobra"]) is same


# --------------------------------------------------------------------------- everywhere a backbone is chosen

def test_audit_cli_runs_mtt_and_the_report_reproduces_it(tmp_path: Path, capsys, tiny_presets) -> None:
    import json
    rc = cli.main(["audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--preset", "quick",
                   "--algorithm", "mtt", "--ipc", "2", "--methods", "vanilla,kde,cobra", "--syn-steps", "3",
                   "--eval-seeds", "1", "--out", str(tmp_path / "out"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out)
    assert res["algorithm"] == "mtt" and set(res["methods"]) == {"vanilla", "kde", "cobra", "random"}
    assert "experts" in captured.err  # the stage's progress bar
    from engine import pipeline, report
    p = pipeline.plan(pipeline.Request("colored-digits", 0.05, algorithm="mtt", preset="quick", ipc=2,
                                       distill_overrides={"syn_steps": 3}))
    cmd = report.command({"config": pipeline.run_key(p, "audit")}, {**res, "eval_seeds": [0]})
    assert "--algorithm mtt" in cmd and "--syn-steps 3" in cmd and "--factor" not in cmd


def test_cobras_expert_batches_are_topped_up_to_every_group() -> None:
    """A cobra batch gets each group of its classes up to group_min rows (FairDD's top-up, as COBRA's batches)
    before its barycenter weights are computed."""
    obj = _objective("cobra")
    obj = replace(obj, group_min=2)
    pools = GroupPools(TARGETS, obj.batch_groups, 2, obj.num_groups)
    batch = torch.tensor([0, 1, 4])
    sel = torch.cat([batch, pools.top_up(batch, TARGETS, obj.batch_groups, obj.group_min,
                                         torch.Generator().manual_seed(0))])
    assert sel.tolist() == [0, 1, 4, 3, 5]  # class 0's only group-1 image, class 1's other group-0 image
    assert torch.allclose(M.balance(TARGETS[sel], GROUPS[sel], 2, 2),
                          torch.tensor([0.75, 0.75, 1.0, 1.5, 1.0], dtype=torch.float64))


def test_a_methods_set_does_not_depend_on_its_neighbours(tiny: BiasedSplit) -> None:
    """Paired draws: every method follows its own experts with the same expert, start and batches, so a method's
    set is the same alone or beside the others (a single-method rerun reproduces a five-way run's row)."""
    w = _random_weights(tiny)
    together = D.distill(tiny, TINY_MTT, D.METHODS, weights=w)
    for m in ("vanilla", "cobra"):
        alone = D.distill(tiny, TINY_MTT, (m,), weights=w)
        assert torch.equal(alone[m].images, together[m].images), m


def test_the_split_digest_follows_the_tensors_not_their_address(tiny: BiasedSplit) -> None:
    """The remembered digest is the split's own: a new split, wherever it is allocated, gets its own."""
    a = _subset(tiny, torch.arange(len(tiny)))
    assert X.split_digest(a) == cache.tensor_digest(a.images, a.targets) == X.split_digest(a)
    del a
    for shift in (1, 2, 3):  # fresh tensors of the same shape (often at a freed address)
        b = _subset(tiny, torch.arange(len(tiny)).roll(shift))
        assert X.split_digest(b) == cache.tensor_digest(b.images, b.targets)
        del b
