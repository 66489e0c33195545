"""Shared fixtures: an isolated DDAUDIT_HOME per test session, deterministic CPU torch."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session caches into its own folder; tests never touch ~/.cache/ddaudit."""
    home = tmp_path_factory.mktemp("ddaudit-home")
    os.environ["DDAUDIT_HOME"] = str(home)
    os.environ.setdefault("DDAUDIT_DEVICE", "cpu")
    os.environ.pop("DDAUDIT_DATA", None)
    torch.manual_seed(0)
    return home


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DDAUDIT_HOME of the test's own, for cache tests."""
    monkeypatch.setenv("DDAUDIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fashion_available() -> bool:
    return all((FASHION_DIR / f"{s}.gz").exists() or (FASHION_DIR / s).exists() for s in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


def require_fashion() -> None:
    """Skip locally when Debian's Fashion-MNIST is missing; under CI=true that is a failure."""
    if not fashion_available():
        if os.environ.get("CI") == "true":
            pytest.fail("Fashion-MNIST missing under CI: .ci/run must apt-get install dataset-fashion-mnist")
        pytest.skip("apt-get install dataset-fashion-mnist to run real-data tests")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and 2 OpenMP threads on a busy 2-core box spin badly."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the quick presets of every stage so the real CLI path runs in seconds."""
    from dataclasses import replace

    from engine import attribute_probe, distill, embed, evaluate
    quick = {"dm": lambda c: c.replace(iterations=3, batch_real=8, width=8, checkpoint_every=2),
             "dc": lambda c: c.replace(iterations=1, batch_real=4, width=8, outer_loop=1, inner_loop=1),
             "idc": lambda c: c.replace(iterations=1, batch_real=4, width=8, outer_loop=2, idc_net_data=8)}
    for name, backbone in distill.BACKBONES.items():
        shrunk = (quick[name](backbone.presets["quick"]) if name in quick
                  else replace(backbone.presets["tiny"], width=8))  # others (MTT): their tiny preset, narrower
        monkeypatch.setitem(backbone.presets, "quick", shrunk)
    monkeypatch.setitem(evaluate.PRESETS, "quick", replace(evaluate.PRESETS["quick"], epochs=2, width=8))
    monkeypatch.setitem(attribute_probe.PRESETS, "quick", replace(attribute_probe.PRESETS["quick"], steps=2, width=8,
                                                                  batch=16))
    monkeypatch.setitem(embed.PRESETS, "quick", replace(embed.PRESETS["quick"], steps=2, width=8, max_train=200,
                                                        batch_size=32, hidden_dim=16, dim=8))
