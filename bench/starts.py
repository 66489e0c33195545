"""What distillation adds: evaluate each method's *starting* set (no distillation) like the audit does.

`python -m bench.starts --dataset bg-fmnist [--conflict-ratio 0.05] [--init method] [--eval-seeds 3]`
prints, per method, the quick evaluation's accuracy and conflicting accuracy and the attribute
probe's aligned share of the start, for comparison with the audit's numbers after distillation.
Same seeds, weights, probe and evaluation as `python -m engine audit ... --preset quick`.
"""
from __future__ import annotations

import argparse
import json

import torch


def main(argv: list[str] | None = None) -> dict:
    from engine import attribute_probe, data, distill, evaluate
    from engine.density import training_weights
    ap = argparse.ArgumentParser(prog="bench.starts")
    ap.add_argument("--dataset", default="colored-digits")
    ap.add_argument("--conflict-ratio", type=float, default=0.05)
    ap.add_argument("--init", default="method")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--eval-seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    train, test = data.load_pair(args.dataset, args.conflict_ratio, args.seed)
    cfg = distill.config_for("quick", "dm", args.ipc, seed=args.seed, init=args.init)
    weights = training_weights(train, preset="quick", seed=args.seed).weights
    mean, std = distill.channel_stats(train.images)
    starts = distill.initial_sets(train, cfg, mean, std, distill.METHODS, weights)
    ev_cfg = evaluate.get_preset("quick")
    probe = attribute_probe.train_probe(train, "quick", seed=args.seed)
    labels = torch.arange(train.num_classes).repeat_interleave(args.ipc)
    flip = not data.get_spec(args.dataset).digits
    out = {}
    for m, x in starts.items():
        ev = evaluate.evaluate_synthetic(x, labels, test, ev_cfg, evaluate.eval_seeds(args.eval_seeds, args.seed * 1000),
                                         mean=mean, std=std, flip=flip)
        unit = distill.to_unit(x, mean, std)
        out[m] = {"accuracy": ev["accuracy"], "conflicting_accuracy": ev["conflicting_accuracy"],
                  "conflicting_accuracy_std": ev["conflicting_accuracy_std"],
                  "synthetic_aligned_share": attribute_probe.synthetic_aligned_share(
                      probe, unit, labels, train.aligned_attribute)}
        print(f"{args.dataset} start of {m:<8} accuracy {ev['accuracy']:5.1f}  conflicting "
              f"{ev['conflicting_accuracy']:5.1f} ± {ev['conflicting_accuracy_std']:.1f}  aligned share "
              f"{out[m]['synthetic_aligned_share']:5.1f}", flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(None)
