"""The bias-attribute probe: a ConvNet that reads the bias attribute of an image, trained on real
images with group-balanced batches, and the aligned shares it measures (docs/EVALUATION.md)."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn.functional as F

from . import cache, presets
from .data import BiasedSplit, check_seed
from .device import autocast, pick_device
from .errors import Cancelled, InvalidArgument
from .evaluate import EvalPreset, predict
from .images import to_float
from .nets import ConvNet, ConvNetConfig, seeded
from .progress import Event, Progress, ShouldStop

PROBE_VERSION = 1  # bump when the probe's training changes: invalidates cached probes


@dataclass(frozen=True)
class ProbePreset:
    """How the attribute probe is trained: SGD steps on group-balanced real batches."""

    name: str
    steps: int
    batch: int
    width: int
    depth: int = 3
    norm: str = "instancenorm"


PRESETS: dict[str, ProbePreset] = {
    "paper": ProbePreset("paper", steps=1000, batch=256, width=64),
    "quick": ProbePreset("quick", steps=100, batch=128, width=32),
}
PRESETS["tiny"] = replace(PRESETS["quick"], name="tiny", steps=3, batch=16, width=8)


def get_preset(preset: str | ProbePreset, **overrides) -> ProbePreset:
    """A probe preset by name (or as given), with field overrides checked against its fields."""
    return presets.choose(PRESETS, preset, "probe", ("steps", "batch", "width", "depth"), **overrides)


def key_fields(cfg: ProbePreset, eval_cfg: EvalPreset) -> dict:
    """The probe's settings as a run key holds them: the flat probe_* fields the evaluation preset carried
    before the probe had a preset of its own (so stored runs keep their ids); depth and norm only where
    they differ from the evaluation's (they were shared then)."""
    out = {"probe_steps": cfg.steps, "probe_batch": cfg.batch, "probe_width": cfg.width}
    out.update({f"probe_{k}": getattr(cfg, k) for k in ("depth", "norm") if getattr(cfg, k) != getattr(eval_cfg, k)})
    return out


@dataclass
class Probe:
    """A classifier of the bias attribute, trained on real training images."""

    net: ConvNet
    num_attributes: int
    meta: dict


def _probe_path(train: BiasedSplit, cfg: ProbePreset, seed: int):
    ratio = train.meta.get("conflict_ratio")
    key = cache.cache_key(dataset=train.dataset, ratio=ratio, seed=seed, steps=cfg.steps,
                          batch=cfg.batch, width=cfg.width, depth=cfg.depth, norm=cfg.norm,
                          data=cache.tensor_digest(train.images, train.targets, train.attributes)[:16], version=PROBE_VERSION)
    return cache.cache_dir("probes") / f"{cache.safe_name(train.dataset)}-{key}.safetensors"


def _probe_config(train: BiasedSplit, cfg: ProbePreset) -> ConvNetConfig:
    c, h = train.images.shape[1], train.images.shape[-1]
    return ConvNetConfig(channels=c, num_classes=train.num_attributes, image_size=h, width=cfg.width,
                         depth=cfg.depth, norm=cfg.norm)


def train_probe(train: BiasedSplit, preset: str | ProbePreset = "quick", seed: int = 0, device=None,
                progress: Progress | None = None, should_stop: ShouldStop | None = None, use_cache: bool = True) -> Probe:
    """Train (or load from cache) a ConvNet that predicts the bias attribute from a real image.

    Batches are drawn group-balanced (each non-empty (class, attribute) cell equally likely) so
    that the class, which predicts the attribute 1 - r of the time in a biased set, is useless
    as a shortcut: the probe must read the attribute itself.
    """
    cfg = get_preset(preset)
    seed = check_seed(seed)
    device = pick_device(device) if not isinstance(device, torch.device) else device
    net_cfg = _probe_config(train, cfg)
    path = _probe_path(train, cfg, seed) if use_cache else None
    if path is not None:
        hit = cache.load_or_none(path)
        if hit is not None:
            net = ConvNet(net_cfg)
            net.load_state_dict(hit[0])
            return Probe(net.to(device).eval(), train.num_attributes, hit[1])
    t0 = time.time()
    counts = torch.from_numpy(train.counts()).double()
    sample_w = 1.0 / counts[train.targets, train.attributes]
    gen = torch.Generator().manual_seed(seed + 104729)
    net = seeded(lambda: ConvNet(net_cfg), seed + 104729).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    net.train()
    for step in range(cfg.steps):
        if should_stop is not None and should_stop():
            raise Cancelled("probe training cancelled", "start it again")
        idx = torch.multinomial(sample_w, cfg.batch, replacement=True, generator=gen)
        xb = to_float(train.images[idx]).to(device)
        yb = train.attributes[idx].to(device)
        with autocast(device):
            loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None and (step + 1) % max(1, cfg.steps // 20) == 0:
            progress(Event("probe", step + 1, cfg.steps, loss=float(loss.detach())))
    net.eval()
    meta = {"dataset": train.dataset, "conflict_ratio": train.meta.get("conflict_ratio"), "seed": seed,
            "steps": cfg.steps, "seconds": time.time() - t0, "version": PROBE_VERSION}
    if path is not None:
        cache.save_tensors(path, net.state_dict(), meta)
    return Probe(net, train.num_attributes, meta)


def predict_attributes(probe: Probe, images: torch.Tensor) -> torch.Tensor:
    """The probe's attribute for each image (uint8, or float in [0, 1]: SyntheticSet.unit(), not standardised)."""
    return predict(probe.net, images)


def probe_accuracy(probe: Probe, test: BiasedSplit) -> float:
    """Percent of test images whose attribute the probe gets right (the balanced test set)."""
    return float((predict_attributes(probe, test.images) == test.attributes).double().mean() * 100.0)


def synthetic_aligned_share(probe: Probe, images: torch.Tensor, labels: torch.Tensor,
                            aligned_attribute: Sequence[int]) -> float:
    """Percent of images whose predicted attribute is their class's bias-aligned attribute."""
    if len(images) != len(labels) or len(labels) == 0:
        raise InvalidArgument(f"{len(images)} images but {len(labels)} labels", "pass one label per image")
    target_attr = torch.tensor(list(aligned_attribute), dtype=torch.long)[labels.long().cpu()]
    return float((predict_attributes(probe, images) == target_attr).double().mean() * 100.0)


def real_aligned_share(train: BiasedSplit) -> float:
    """The same share in the real training set, from its bias labels."""
    return float(train.aligned.double().mean() * 100.0)
