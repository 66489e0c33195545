"""Registry-driven smoke tests (in the style of timm's): every dataset and every method x algorithm at tiny
size, read from the registries, so a new entry is tested by adding it; and the engine's import boundary."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import data, distill
from tests.fakes import digits_subset, fake_data_root

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One --data-root with small files in every raw layout the registry reads."""
    return fake_data_root(tmp_path_factory.mktemp("raw"))


@pytest.mark.parametrize("name", list(data.REGISTRY))
def test_every_dataset_builds_from_its_source(name: str, raw_root: Path) -> None:
    spec = data.REGISTRY[name]
    status = data.dataset_status(name, raw_root)
    assert status["available"] and status["how_to"], status
    train, test = data.load_pair(name, 0.2, seed=0, data_root=raw_root)
    for split in (train, test):
        assert tuple(split.images.shape[1:]) == spec.image_shape and split.images.dtype == torch.uint8
        assert len(split.targets) == len(split.attributes) == len(split.images) > 0
        assert spec.aligned_attribute in (None, split.aligned_attribute)  # None: derived from the training data
        aligned = split.attributes == torch.tensor(split.aligned_attribute)[split.targets]
        assert torch.equal(split.aligned, aligned) and split.aligned_attribute == train.aligned_attribute
        assert int(split.targets.max()) < spec.num_classes and int(split.attributes.max()) < spec.num_attributes
    assert 0 < int((~train.aligned).sum()) < len(train)  # both kinds present in the biased split
    again = data.load_split(name, 0.2, "train", seed=0, data_root=raw_root, use_cache=False)
    assert torch.equal(again.images, train.images) and torch.equal(again.attributes, train.attributes)


@pytest.fixture(scope="module")
def small_train() -> data.BiasedSplit:
    """colored-digits, 3 classes x 12 images with a few conflicting ones (the real loader)."""
    return digits_subset(3, 12, ratio=0.2)


@pytest.mark.parametrize("algorithm", distill.algorithms())
@pytest.mark.parametrize("method", distill.METHODS)
def test_every_method_and_algorithm_distills(method: str, algorithm: str, small_train: data.BiasedSplit) -> None:
    spec = distill.REGISTRY[method]
    cfg = distill.config_for("tiny", algorithm, 2, iterations=2, width=8, batch_real=6, device="cpu")
    w = torch.rand(len(small_train), generator=torch.Generator().manual_seed(0)) + 0.1 if spec.needs_weights else None
    start = distill.initial_sets(small_train, cfg, *distill.channel_stats(small_train.images), (method,), w)[method]
    s = distill.distill(small_train, cfg, (method,), weights=w)[method]
    per = 2 * distill.BACKBONES[algorithm].form(cfg, 32).per_stored  # training images per class (IDC: factor^2 each)
    assert s.images.shape == (3 * per, 3, 32, 32) and s.labels.tolist() == [c for c in range(3) for _ in range(per)]
    assert all(torch.isfinite(torch.tensor(v)) for _, v in s.loss_history) and s.loss_history
    assert torch.isfinite(s.images).all()
    stored = s.formation if s.formation is not None else s.images  # IDC, DREAM: the stored tiles
    assert stored.shape == start.shape == (6, 3, 32, 32)
    assert not torch.equal(stored, start), "the matching gradient never reached the images"


def test_every_registry_entry_is_complete() -> None:
    for name, m in distill.REGISTRY.items():
        assert m.name == name and m.label.startswith(name) and m.colour.startswith("#")
        assert m.start in ("real", "weighted", "balanced") and callable(m.dm_loss) and callable(m.dc_loss)
        assert callable(m.mtt_objective) and callable(m.cafe_loss)
        assert not (m.weighted_draws and not m.needs_weights), "importance draws need weights"
    for name, spec in data.REGISTRY.items():
        assert spec.name == name and spec.source.how_to
        assert spec.aligned_attribute is None or len(spec.aligned_attribute) == spec.num_classes


def test_the_engine_never_imports_the_ui_stack() -> None:
    """Every engine module imports without streamlit or plotly (the GPU machine has neither), and only
    the map module needs umap and only the figure package (engine.figures.*) and the report need plotly."""
    # the module names come from the files: pkgutil.walk_packages would import every package itself (figures too)
    code = ("import importlib, pathlib, sys\n"
            "names = sorted('.'.join(p.with_suffix('').parts[:-1] if p.name == '__init__.py' else p.with_suffix('').parts) for p in pathlib.Path('engine').rglob('*.py'))\n"
            "mods = [m for m in names if m not in ('engine.projection', 'engine.report', 'engine.__main__') and not m.startswith('engine.figures')]\n"
            "[importlib.import_module(m) for m in mods]\n"
            "bad = sorted(k for k in ('streamlit', 'plotly', 'umap') if k in sys.modules)\n"
            "print(len(mods), bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert int(done.stdout.split()[0]) > 20  # it really walked the package


def test_a_sweep_plans_every_algorithms_cells_as_its_own_runs() -> None:
    """A sweep grid with --algorithm A plans every cell as an A audit, and the same cell under each
    algorithm is a distinct run (IDC's is not DC's, MTT's not DM's)."""
    from dataclasses import replace

    from engine import pipeline, sweep
    grid = sweep.make_grid("colored-digits", "0.05", methods="vanilla,kde", preset="tiny", algorithm="dm")
    keys = []
    for algorithm in distill.algorithms():
        planned = sweep.cells(replace(grid, algorithm=algorithm))
        assert planned and all(c.plan.distill_cfg.algorithm == algorithm for c in planned)
        keys.append(pipeline.run_key(planned[0].plan, "audit"))
    assert len(set(map(str, keys))) == len(distill.algorithms())
