"""Distillation speed: vanilla alone vs methods side by side (three, all five, COBRA with and without its
warm start), the floor COBRA's warm start sets under the five-way run, and a per-class-loop DM reference.

Prints seconds per iteration, iterations/s and real images embedded per second at the quick and
paper settings (paper: a few iterations only) on colored-digits and, when Debian's
Fashion-MNIST is installed, bg-fmnist. The "per-class loop" row times a DM iteration written
the way the public reference (VICO-UoE/DatasetCondensation main_DM.py) organises it: one real
forward per class (built with autograd, then detached), one synthetic forward per class, fp32,
default memory format. It is an equivalent written for this benchmark, not that code.

The "floor" row is derived, not timed as a whole: vanilla alone + COBRA alone (its K) - the batch
preparation the two share (network init, DSA parameters, drawing and augmenting the real rows, timed
on its own). Side by side, every other piece of those two runs still has to be done: vanilla's real
forward through the shared network, and COBRA's training of its copy plus its real forward through
that copy (a different network). So no sharing can bring the five-way run under it.
`python -m bench.bench_distill [--device cuda] [--quick-iters 6] [--paper-iters 3]`.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch

from bench.machine import load_average
from engine import data
from engine import distill as D
from engine.allocator import tune_cpu_allocator
from engine.augment import DSA
from engine.device import describe, pick_device
from engine.distill.backbones.dm import shared_batch
from engine.distill.loop import build, channel_stats
from engine.distill.toolkit import Gens
from engine.nets import ConvNet, ConvNetConfig, init_network


def available(names: str) -> list[str]:
    """The comma-separated datasets whose data is here; the others are said skipped."""
    out = []
    for name in names.split(","):
        if data.dataset_status(name)["available"]:
            out.append(name)
        else:
            print(f"{name}: data not available, skipped", flush=True)
    return out


def _standin_weights(train: data.BiasedSplit) -> torch.Tensor:
    """Stand-in KDE weights: 1 / size of the sample's class x attribute group, the weights a perfect
    density estimate would give. Their spread sets how often KDE's draws repeat or hit rows already
    in the batch, hence the extra real forwards; real KDE weights concentrate similarly (on
    bg-fmnist at 5%, an effective sample size of ~2,100 of 60,000)."""
    ng = max(train.num_attributes, 1)
    key = train.targets * ng + train.attributes
    counts = torch.bincount(key, minlength=train.num_classes * ng).float()
    return 1.0 / counts[key]


def _real_rows(train: data.BiasedSplit, cfg: D.DistillConfig, methods: tuple[str, ...]) -> int:
    """Real images embedded per iteration: uniform batch + FairDD top-up + KDE draws new to the batch.

    KDE's draws use the stand-in weights (`_standin_weights`)."""
    kde = any(D.REGISTRY[m].weighted_draws for m in methods) and cfg.kde_sampling == "importance"
    sampler = D.Sampler(train, cfg.batch_real, cfg.group_min, any(D.REGISTRY[m].group_topup for m in methods),
                        kde_weights=_standin_weights(train) if kde else None, kde_batch=cfg.kde_batch,
                        balanced=any(D.REGISTRY[m].balanced_draws for m in methods))
    g = Gens.at(cfg.seed, 0)
    d = sampler.draw(g.main, g.groups, g.kde, g.balanced)
    own = sum(int((~d.drawn_only).sum()) for m in methods if D.REGISTRY[m].warm_start and cfg.warmup_epochs() > 0)
    return len(d.index) + own  # a warm-started method embeds its rows again through its own network


def time_engine(train: data.BiasedSplit, cfg: D.DistillConfig, methods: tuple[str, ...]) -> float:
    """Seconds per iteration of engine.distill, first iteration (warm-up) excluded (MTT's experts, trained
    before the loop, are not counted)."""
    stamps: list[float] = []
    _sync(cfg.device)
    weighted = any(D.REGISTRY[m].needs_weights for m in methods)
    D.distill(train, cfg, methods, weights=_standin_weights(train) if weighted else None,
              progress=lambda info: info.stage == "distill" and (_sync(cfg.device), stamps.append(time.perf_counter())))
    return (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)


def time_shared_prep(train: data.BiasedSplit, cfg: D.DistillConfig, methods: tuple[str, ...], iterations: int
                     ) -> float:
    """Seconds per iteration of what every method side by side shares before its own work: the random
    network's init, the DSA parameters, drawing and augmenting the real batch (first iteration excluded)."""
    weighted = any(D.REGISTRY[m].needs_weights for m in methods)
    mean, std = channel_stats(train.images)
    run, _ = build(train, cfg, methods, _standin_weights(train) if weighted else None, mean, std,
                   pick_device(cfg.device))
    times = []
    for it in range(iterations + 1):
        _sync(cfg.device)
        t = time.perf_counter()
        gens = Gens.at(cfg.seed, it)
        init_network(run.net, gens.main)  # as distill() does before each step
        shared_batch(run, gens)
        _sync(cfg.device)
        times.append(time.perf_counter() - t)
    return sum(times[1:]) / iterations


def floor_row(rows: list[dict], train: data.BiasedSplit, cfg: D.DistillConfig, iterations: int) -> dict:
    """The derived floor of all five side by side with COBRA's warm start (module docstring)."""
    k = cfg.warmup_epochs()
    alone = {r["what"]: r["s_per_it"] for r in rows}
    shared = time_shared_prep(train, cfg, ("vanilla", "cobra"), iterations)
    floor = alone["vanilla"] + alone[f"cobra (K={k})"] - shared
    five = alone["+".join(D.METHODS) + f" (cobra K={k})"]
    separate = sum(alone[m if m != "cobra" else f"cobra (K={k})"] for m in D.METHODS)
    return {"dataset": train.dataset, "preset": rows[0]["preset"], "derived": True,
            "what": f"floor of all five (cobra K={k}): vanilla + cobra alone - shared batch",
            "s_per_it": floor, "shared_prep_s": shared, "ratio": floor / alone["vanilla"],
            "five_way_over_floor": five / floor, "separate_s": separate, "separate_over_five_way": separate / five}


def time_per_class_loop(train: data.BiasedSplit, cfg: D.DistillConfig, iterations: int) -> float:
    """Seconds per iteration of a DM step organised like main_DM.py (per-class forwards, fp32)."""
    device = pick_device(cfg.device)
    nc, ipc = train.num_classes, cfg.ipc
    net = ConvNet(ConvNetConfig(channels=train.images.shape[1], num_classes=nc, image_size=train.images.shape[2],
                                width=cfg.width, depth=cfg.depth, norm=cfg.norm)).to(device)
    spec = data.REGISTRY.get(train.dataset)
    dsa = DSA(cfg.dsa, flip=not (spec and spec.digits))
    images = train.images.to(device)
    by_class = [torch.nonzero(train.targets == c).flatten() for c in range(nc)]
    syn = torch.randn(nc * ipc, *train.images.shape[1:], device=device, requires_grad=True)
    opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(iterations + 1):
        _sync(cfg.device)
        t = time.perf_counter()
        D.init_network(net, gen)
        net.requires_grad_(False)
        loss = torch.zeros((), device=device)
        for c in range(nc):
            idx = by_class[c][torch.randperm(len(by_class[c]), generator=gen)[:cfg.batch_real]].to(device)
            real = images[idx].float() / 255.0
            p = dsa.sample(1, gen)  # the same parameters for the class's real and synthetic images
            out_real = net.embed(dsa.apply(real, p)).detach()
            out_syn = net.embed(dsa.apply(syn[c * ipc:(c + 1) * ipc], p))
            loss = loss + ((out_real.mean(0) - out_syn.mean(0)) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(cfg.device)
        times.append(time.perf_counter() - t)
    return sum(times[1:]) / iterations


def _sync(device: str) -> None:
    if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        torch.cuda.synchronize()


def run(dataset: str, preset: str, iterations: int, device: str, reference: bool) -> list[dict]:
    train = data.load_split(dataset, 0.05, "train", 0)
    cfg = D.config_for(preset, "dm", 10, iterations=iterations + 1, device=device, checkpoint_every=10 ** 6)
    rows = []
    base = None
    k = cfg.warmup_epochs()
    cases = [(("vanilla",), cfg, ""), (("vanilla", "kde", "fairdd"), cfg, ""), (D.METHODS, cfg, f" (cobra K={k})"),
             (D.METHODS, replace(cfg, cobra_warmup=0), " (cobra K=0)"), (("cobra",), cfg, f" (K={k})"),
             (("cobra",), replace(cfg, cobra_warmup=0), " (K=0)")]
    cases += [((m,), cfg, "") for m in D.METHODS if m not in ("vanilla", "cobra")]  # the rest alone
    for methods, c, note in cases:
        s = time_engine(train, c, methods)
        real = _real_rows(train, c, methods)
        base = base or s
        rows.append({"dataset": dataset, "preset": preset, "what": "+".join(methods) + note, "s_per_it": s,
                     "it_per_s": 1 / s, "real_img_per_s": real / s, "ratio": s / base,
                     # the preset's whole run, extrapolated from the measured s/it (setup not included)
                     "preset_run_s": s * D.default_config(preset, "dm").iterations})
    if k > 0:
        rows.append(floor_row(rows, train, cfg, iterations))
    if reference:
        s = time_per_class_loop(train, replace(cfg, iterations=iterations), iterations)
        real = _real_rows(train, cfg, ("vanilla",))
        rows.append({"dataset": dataset, "preset": preset, "what": "vanilla, per-class loop (reference-style)",
                     "s_per_it": s, "it_per_s": 1 / s, "real_img_per_s": real / s, "ratio": s / base})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench_distill")
    ap.add_argument("--device", default=os.environ.get("DDAUDIT_DEVICE", "auto"))
    ap.add_argument("--quick-iters", type=int, default=6)
    ap.add_argument("--paper-iters", type=int, default=2)
    ap.add_argument("--datasets", default="colored-digits,bg-fmnist")
    ap.add_argument("--presets", default="quick,paper")
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args(argv)
    dev = pick_device(args.device)
    tuned = tune_cpu_allocator()  # as the CLI, the app and sweep cells do: the figures users get
    load = load_average()
    print(f"device: {describe(dev)}; torch {torch.__version__}; load average {load:.1f} on {os.cpu_count()} cores; "
          f"malloc tuned: {'yes' if tuned else 'no'}", flush=True)
    rows = []
    for name in available(args.datasets):
        for preset in args.presets.split(","):
            its = args.quick_iters if preset == "quick" else args.paper_iters
            for r in run(name, preset, its, str(dev), not args.no_reference):
                rows.append(r)
                if r.get("derived"):
                    print(f"{r['dataset']:<15} {r['preset']:<6} {r['what']:<52} {r['s_per_it']:8.3f} s/it "
                          f"(shared batch {r['shared_prep_s']:.3f} s)  x{r['ratio']:.2f}; the five-way run is "
                          f"{r['five_way_over_floor']:.2f}x its floor; five separate runs {r['separate_s']:.3f} s/it, "
                          f"{r['separate_over_five_way']:.2f}x the five-way run", flush=True)
                    continue
                print(f"{r['dataset']:<15} {r['preset']:<6} {r['what']:<52} {r['s_per_it']:8.3f} s/it "
                      f"{r['it_per_s']:7.2f} it/s {r['real_img_per_s']:9.0f} real img/s  x{r['ratio']:.2f}"
                      + (f"  {preset} run of {D.default_config(preset, 'dm').iterations} it ~ {r['preset_run_s']:.0f} s"
                         if "preset_run_s" in r else ""), flush=True)
    return {"device": describe(dev), "rows": rows}


if __name__ == "__main__":
    main(None)
