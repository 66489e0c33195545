"""IDC (multi-formation gradient matching): the tiles on hand-made images, each remedy's IDC target on
hand-computed gradients, the network trained on real data between matching steps, the stored form kept
beside the decoded set, and the clear refusals."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engine import cli, distill as D
from engine.distill.backbones import idc
from engine.errors import InvalidArgument

from .test_distill import TINY_DC, _random_weights, tiny  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_IDC = replace(TINY_DC, algorithm="idc", iterations=2, outer_loop=2, options=idc.IDCOptions(idc_net_data=8))


def test_decode_upsamples_each_tile_to_a_whole_image() -> None:
    quadrants = torch.tensor([[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]).view(1, 1, 4, 4)
    out = idc.decode(quadrants, 2)
    assert out.shape == (4, 1, 4, 4)
    for k, value in enumerate((1.0, 2.0, 3.0, 4.0)):  # row-major tiles, each a constant image
        assert torch.allclose(out[k], torch.full((1, 4, 4), value))
    assert idc.decode_labels(torch.tensor([0, 1]), 2).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert idc.decode(quadrants, 1) is quadrants


def test_encode_packs_factor_squared_images_into_each_stored_one() -> None:
    ipc, f = 2, 2
    x = torch.arange(2 * ipc * f * f, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
    stored = idc.encode(x, ipc, f)
    assert stored.shape == (2 * ipc, 3, 8, 8)
    # tile k of stored image n of a class is that class's image k * ipc + n (IDC's "mix" start)
    assert stored[0, 0, :4, :4].unique().tolist() == [0.0] and stored[0, 0, :4, 4:].unique().tolist() == [2.0]
    assert stored[1, 0, 4:, 4:].unique().tolist() == [7.0] and stored[2, 0, :4, :4].unique().tolist() == [8.0]
    back = idc.decode(stored, f)
    for c in range(2):
        for n in range(ipc):
            for k in range(f * f):
                assert torch.equal(back[(c * ipc + n) * f * f + k], x[c * ipc * f * f + k * ipc + n])


def _ce_grad(w: torch.Tensor, x: torch.Tensor, c: int, weights: torch.Tensor) -> torch.Tensor:
    """d/dW sum_i weights_i CE(W x_i, c) of a bias-free linear model, by hand: sum_i w_i (p_i - e_c) x_i^T."""
    p = torch.softmax(x @ w.T, dim=1)
    p[:, c] -= 1
    return (weights[:, None] * p).T @ x


def _distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """DC's distance for one weight matrix: sum over output rows of 1 - cosine."""
    return float((1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-6)).sum())


@pytest.mark.parametrize("method", D.METHODS)
def test_each_remedys_idc_target_on_hand_computed_gradients(method: str) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3, bias=False)
    w = net.weight.detach()
    c, x_real, xs = 1, torch.randn(6, 5), torch.randn(4, 5)
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    weights = torch.tensor([0.1, 0.1, 0.1, 0.1, 1.0, 2.0]) if method == "kde" else None
    mean = lambda rows: _ce_grad(w, x_real[rows], c, torch.full((len(rows),), 1 / len(rows)))  # noqa: E731
    g_syn = _ce_grad(w, xs, c, torch.full((4,), 0.25))
    every, g0, g1 = torch.arange(6), torch.arange(4), torch.arange(4, 6)
    want = {"vanilla": _distance(g_syn, mean(every)), "balanced": _distance(g_syn, mean(every)),
            "kde": _distance(g_syn, _ce_grad(w, x_real, c, torch.tensor([0.1, 0.1, 0.1, 0.1, 1.0, 2.0]) / 3.4)),
            "fairdd": (_distance(g_syn, mean(g0)) + _distance(g_syn, mean(g1))) / 2,
            "cobra": _distance(g_syn, (mean(g0) + mean(g1)) / 2)}[method]
    got = D.dc_class_loss(net, xs, c, x_real, method, groups=groups, weights=weights)  # IDC matches with dc_loss
    assert float(got.detach()) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_one_group_makes_fairdd_and_cobra_vanillas_target() -> None:
    torch.manual_seed(1)
    net = torch.nn.Linear(5, 3, bias=False)
    x_real, xs = torch.randn(6, 5), torch.randn(4, 5)
    losses = {m: float(D.dc_class_loss(net, xs, 0, x_real, m, groups=torch.zeros(6, dtype=torch.long)).detach())
              for m in ("vanilla", "fairdd", "cobra")}
    assert losses["fairdd"] == pytest.approx(losses["vanilla"]) and losses["cobra"] == pytest.approx(losses["vanilla"])


def test_the_network_trains_on_real_data_between_matching_steps(tiny) -> None:  # noqa: F811
    runs = {n: D.distill(tiny, TINY_IDC.replace(idc_net_data=n), ["vanilla"])["vanilla"].images for n in (8, 16)}
    assert not torch.equal(runs[8], runs[16])  # what the network saw of the real data changed the matching
    one = {n: D.distill(tiny, TINY_IDC.replace(outer_loop=1, idc_net_data=n), ["vanilla"])["vanilla"].images
           for n in (8, 16)}
    assert torch.equal(one[8], one[16])  # one matching step per iteration: the network is never trained


def test_the_set_is_decoded_and_its_stored_form_kept_beside(tiny, tmp_path) -> None:  # noqa: F811
    sets = D.distill(tiny, TINY_IDC, D.METHODS, weights=_random_weights(tiny))
    for m, s in sets.items():
        assert s.formation.shape == (4 * TINY_IDC.ipc, 3, 32, 32) and s.meta["factor"] == 2
        assert torch.equal(s.images, idc.decode(s.formation, 2)) and len(s.labels) == 4 * TINY_IDC.ipc * 4
    D.save_synthetic(sets, tmp_path)
    back = D.load_synthetic(tmp_path / "kde")
    assert (tmp_path / "kde" / "formation.safetensors").is_file()
    assert torch.equal(back.images, sets["kde"].images) and torch.equal(back.formation, sets["kde"].formation)
    again = D.distill(tiny, TINY_IDC, D.METHODS, weights=_random_weights(tiny))
    assert all(torch.equal(again[m].images, sets[m].images) for m in D.METHODS)  # same seed, same sets


@pytest.mark.parametrize("argv, match", [
    (["--algorithm", "dm", "--factor", "2"], "--factor is a setting of IDC and DREAM (multi-formation factor"),
    (["--algorithm", "idc", "--factor", "3"], "does not divide"),
    (["--algorithm", "idc", "--ipc", "40"], "smallest class"),
])
def test_bad_idc_settings_are_refused_clearly(argv, match, tmp_path, capsys, tiny_presets) -> None:
    rc = cli.main(["audit", "--dataset", "colored-digits", "--conflict-ratio", "0.05", "--preset", "quick",
                   "--methods", "vanilla", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_factor_zero_follows_the_image_size() -> None:
    cfg = D.config_for("quick", "idc", 10)
    assert idc.factor_for(cfg, 32) == 2 and idc.factor_for(cfg, 64) == 4 and idc.factor_for(cfg.replace(ipc=100), 64) == 3
    assert idc.factor_for(cfg.replace(factor=1), 32) == 1
    assert D.BACKBONES["dc"].form(D.config_for("quick", "dc", 10), 32).per_stored == 1
    assert D.BACKBONES["idc"].form(cfg, 32).per_stored == 4 and D.BACKBONES["idc"].form(cfg, 64).per_stored == 16
    with pytest.raises(InvalidArgument, match="factor"):
        D.config_for("quick", "idc", 10, factor=-1)
    assert "factor" not in D.config_for("quick", "dc", 10).key() and "factor" in cfg.key()


@pytest.mark.parametrize("algorithm, over, shown", [("idc", {}, None), ("idc", {"factor": 1}, "--factor 1"),
                                                    ("dm", {}, None)])
def test_the_reports_command_reproduces_an_idc_run(algorithm, over, shown) -> None:
    from engine import pipeline, report
    p = pipeline.plan(pipeline.Request("colored-digits", 0.05, algorithm=algorithm, preset="tiny", ipc=2,
                                       distill_overrides=over))
    res = {"dataset": "colored-digits", "conflict_ratio": 0.05, "algorithm": algorithm, "ipc": 2,
           "preset": "tiny", "seed": 0, "eval_seeds": p.seeds}
    cmd = report.command({"config": pipeline.run_key(p, "audit")}, res)
    assert f"--algorithm {algorithm}" in cmd
    assert (shown in cmd) if shown else "--factor" not in cmd  # a DM key has no factor: no "--factor None"


