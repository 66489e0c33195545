"""What each remedy's MTT experts are: how fair they are and how far the student must follow them.

    python -m bench.mtt_experts --dataset bg-fmnist [--conflict-ratio 0.05] [--preset quick] [--expert 0]

For each method, the experts a `--algorithm mtt` audit of the same request uses (read from the cache,
trained first where missing, exactly as the audit would): the test accuracy (all / aligned / conflicting)
of one expert at each saved epoch, and the parameter distance ||theta_{s+M} - theta_s|| that MTT's student
covers from each start epoch s (M = expert_epochs). A remedy can only reach a distilled set through its
experts: this separates "the experts are not fair" from "the student cannot follow them".
"""
from __future__ import annotations

import argparse
import json

from engine import distill as D, evaluate, pipeline, stages
from engine.distill import experts as X, loop
from engine.distill.backbones import mtt
from engine.nets import ConvNet


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench.mtt_experts")
    ap.add_argument("--dataset", default="colored-digits")
    ap.add_argument("--conflict-ratio", type=float, default=0.05)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--methods", default=",".join(D.METHODS))
    ap.add_argument("--expert", type=int, default=0, help="which expert of each objective to evaluate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    p = pipeline.plan(pipeline.Request(args.dataset, args.conflict_ratio, methods=args.methods, algorithm="mtt",
                                       preset=args.preset, seed=args.seed, device="cpu"))
    train, test = stages.load_train(p), stages.load_test(p)
    wr = stages.plan_weights(p, train)
    weights = wr.weights if wr else None
    cfg = p.distill_cfg
    o = cfg.options
    if not 0 <= args.expert < o.num_experts:
        raise SystemExit(f"--expert {args.expert}: the preset trains experts 0..{o.num_experts - 1}")
    mean, std = loop.channel_stats(train.images)
    run, _ = loop.build(train, cfg, p.methods, weights, mean, std, p.device)
    banks = mtt.experts_for(run, train, weights)  # the distillation's own path to its experts
    out = {}
    for m in p.methods:
        t = banks[m].trajectory(args.expert)
        net = ConvNet(run.net.cfg)
        rows = []
        for epoch in range(len(t)):
            X.load_flat(net, t[epoch])
            net.eval()
            r = evaluate.evaluate_net(net, test, mean, std)
            rows.append({k: r[k] for k in ("accuracy", "aligned_accuracy", "conflicting_accuracy")})
        moves = [float((t[s + o.expert_epochs] - t[s]).norm()) for s in range(o.max_start_epoch + 1)]
        out[m] = {"epochs": rows, "moves": moves}
        last = rows[-1]
        by_epoch = " ".join(f"{r['conflicting_accuracy']:.1f}" for r in rows)
        print(f"{m:<9} expert {args.expert} epoch {len(t) - 1}: accuracy {last['accuracy']:5.1f}  aligned "
              f"{last['aligned_accuracy']:5.1f}  conflicting {last['conflicting_accuracy']:5.1f}  (conflicting by "
              f"epoch: {by_epoch});  {o.expert_epochs}-epoch move from start epoch 0..{o.max_start_epoch}: "
              + " ".join(f"{x:.2f}" for x in moves), flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(None)
