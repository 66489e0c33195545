"""The GPU path, checked and timed in one run on a fresh GPU machine; writes one JSON file.

    python3 -m bench.gpu_check --data-root .gpu-data --out gpu_check.json      # on the GPU machine
    python3 -m bench.gpu_check --smoke --out /tmp/gpu_check.json               # here: the same steps, tiny, CPU

Steps (each timed; a failing step is recorded and the next one runs; the JSON is rewritten after every
step, so a run cut short still reports what it measured):
  1. `pytest -m cuda` (tests/test_cuda.py), with `-o addopts=` (the GPU machine has no pytest plugins)
  2. DM at paper settings (IPC 10, batch_real 256, width 128): s/it of vanilla alone, all methods side
     by side (COBRA's default warm start and K = 0), COBRA alone and the floor its warm start sets
     under the five-way run (vanilla + COBRA alone - their shared batch), and a per-class reference
     loop written like VICO-UoE/DatasetCondensation's main_DM.py (bench/bench_distill.py; a re-implementation, not that
     code); the 20,000-iteration paper run projected from them
  3. SupCon at the paper preset: `--supcon-steps` of its 3,000 steps timed, the whole projected
  4. KDE log-densities of 60,000 x 128 embeddings in 10 classes
  5. a paper-preset audit of bg-fmnist at reduced iterations (quick embeddings; `--audit-iters`)
  2b. evaluation trainings (bench/bench_eval.py): 18 quick trainings at IPC 10 one by one against all of them
     as one batched model (target: batched >= 5x faster), GFLOP/s beside a matrix product, peak memory
  6. MTT at paper settings (bench/bench_mtt.py): seconds per expert epoch of each remedy's objective, and
     per matching iteration of vanilla alone and all five (stand-in trajectories), with the peak GPU
     memory of the unroll; the paper run (100 experts x 50 epochs per objective, 5,000 iterations) projected
  7. one paper-preset row of a published table through `python -m engine reproduce`'s path (FairDD table 1,
     C-FMNIST (BG), DM, vanilla and FairDD, IPC 10; C-MNIST (FG)'s stand-in colored-digits when Fashion-MNIST
     is missing) on a local Ray with the GPU, the iterations cut to `--reproduce-iters` and the whole-set
     evaluation off; the side-by-side table, and the 20,000-iteration audit projected
Targets (docs/DISTILL.md): vanilla >= 3x faster than the reference loop; all methods <= 1.6x vanilla;
the 20,000-iteration all-methods run projected under 10 minutes. Needs only torch, torchvision, numpy,
scikit-learn, safetensors, pillow, tqdm and pytest: no streamlit, plotly or umap.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"vanilla_vs_reference_speedup_min": 3.0, "all_vs_vanilla_max": 1.6, "paper_run_all_minutes_max": 10.0,
           "eval_batched_speedup_min": 5.0}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_env(args) -> dict:
    dev = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": dev, "cpu_count": os.cpu_count()}
    if dev == "cuda":
        info.update(gpu=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported(),
                    memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1))
    return info


def step_pytest(args) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider", "-m", "cuda",
           "tests/test_cuda.py"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.pytest_timeout)
    tail = (done.stdout + done.stderr).strip().splitlines()
    return {"returncode": done.returncode, "summary": tail[-1] if tail else "", "tail": tail[-25:]}


def _dataset(args) -> str:
    from engine import data
    if args.smoke:
        return "colored-digits"
    return "bg-fmnist" if data.dataset_status("bg-fmnist", args.data_root)["available"] else "colored-digits"


def step_dm(args, device: str) -> dict:
    from bench import bench_distill as B
    from engine import data, distill
    from dataclasses import replace
    name = _dataset(args)
    train = data.load_split(name, 0.05, "train", 0, args.data_root)
    preset = "tiny" if args.smoke else "paper"
    its = 2 if args.smoke else args.dm_iters
    cfg = distill.config_for(preset, "dm", 10 if not args.smoke else 2, iterations=its + 1, device=device,
                             checkpoint_every=10 ** 6)
    rows = {}
    for label, methods, c in (("vanilla", ("vanilla",), cfg), ("all", distill.METHODS, cfg),
                              ("all_cobra_k0", distill.METHODS, replace(cfg, cobra_warmup=0))):
        rows[label] = B.time_engine(train, c, methods)
    rows["cobra_alone"] = B.time_engine(train, cfg, ("cobra",))
    # what COBRA's warm start leaves to do beside vanilla however much is shared (bench/bench_distill.py)
    shared = B.time_shared_prep(train, cfg, ("vanilla", "cobra"), its)
    rows["floor_all"] = rows["vanilla"] + rows["cobra_alone"] - shared
    rows["reference_loop"] = B.time_per_class_loop(train, replace(cfg, iterations=its), its)
    n_paper = distill.default_config("paper", "dm").iterations
    out = {"dataset": name, "preset": preset, "iterations_timed": its, "s_per_it": rows,
           "vanilla_vs_reference_speedup": rows["reference_loop"] / rows["vanilla"],
           "all_vs_vanilla": rows["all"] / rows["vanilla"],
           "all_cobra_k0_vs_vanilla": rows["all_cobra_k0"] / rows["vanilla"],
           "floor_all_vs_vanilla": rows["floor_all"] / rows["vanilla"],
           "paper_run_all_minutes_projected": rows["all"] * n_paper / 60,
           "paper_run_vanilla_minutes_projected": rows["vanilla"] * n_paper / 60}
    out["targets_met"] = {
        "vanilla_vs_reference": out["vanilla_vs_reference_speedup"] >= TARGETS["vanilla_vs_reference_speedup_min"],
        "all_vs_vanilla": out["all_vs_vanilla"] <= TARGETS["all_vs_vanilla_max"],
        "paper_run_all": out["paper_run_all_minutes_projected"] <= TARGETS["paper_run_all_minutes_max"]}
    return out


def step_supcon(args, device: str) -> dict:
    from engine import data, embed
    train = data.load_split(_dataset(args), 0.05, "train", 0, args.data_root)
    steps = 2 if args.smoke else args.supcon_steps
    p = embed.with_overrides("tiny" if args.smoke else "paper", steps=steps)
    _sync()
    t = time.perf_counter()
    embed.train_supcon(train, p, 0, torch.device(device))
    _sync()
    s = time.perf_counter() - t
    full = embed.get_preset("paper").steps
    return {"steps_timed": steps, "seconds": s, "s_per_step": s / steps, "paper_steps": full,
            "paper_minutes_projected": s / steps * full / 60}


def step_kde(args, device: str) -> dict:
    from bench.bench_kde import make_embeddings
    from engine.density import kde_log_density, suggest_kernel_variance
    n = 3000 if args.smoke else 60000
    z, labels = make_embeddings(n, 128, 10)
    s2 = suggest_kernel_variance(z, labels)
    zd, ld = z.to(device), labels.to(device)
    kde_log_density(zd, ld, s2)  # warm-up (kernels, allocator)
    times = []
    for _ in range(3):
        _sync()
        t = time.perf_counter()
        out = kde_log_density(zd, ld, s2)
        _sync()
        times.append(time.perf_counter() - t)
    return {"n": n, "dim": 128, "classes": 10, "best_s": min(times), "finite": bool(torch.isfinite(out).all())}


def step_audit(args, device: str) -> dict:
    from engine import audit, pipeline, stored
    req = pipeline.Request(dataset=_dataset(args), conflict_ratio=0.05, preset="tiny" if args.smoke else "paper",
                           embed_preset="tiny" if args.smoke else "quick", ipc=2 if args.smoke else 10,
                           eval_seeds=1 if args.smoke else args.audit_eval_seeds, data_root=args.data_root,
                           device=device, distill_overrides={"iterations": 2 if args.smoke else args.audit_iters})
    t = time.perf_counter()
    result, run = stored.audit_stored(req, force=True)
    return {"seconds": time.perf_counter() - t, "run_id": run.id, "table": audit.table(result),
            "timings": result["timings"], "probe_accuracy": result["probe_accuracy"],
            "methods": {m: {k: r.get(k) for k in ("accuracy", "conflicting_accuracy", "worst_group_accuracy",
                                                   "synthetic_aligned_share")} for m, r in result["methods"].items()}}


def step_pair(args, device: str, base: str, other: str) -> dict:
    """A backbone beside the one it builds on at the paper settings (seconds per iteration, all five methods side
    by side): IDC against DC, DREAM against IDC (its clustering's cost), CAFE against DM."""
    from bench import bench_distill as B
    from engine import data, distill
    name = _dataset(args)
    train = data.load_split(name, 0.05, "train", 0, args.data_root)
    preset = "tiny" if args.smoke else "paper"
    rows = {}
    for algorithm in (base, other):
        cfg = distill.config_for(preset, algorithm, 10 if not args.smoke else 2, iterations=args.idc_iters + 1,
                                 device=device, checkpoint_every=10 ** 6)
        rows[algorithm] = B.time_engine(train, cfg, distill.METHODS)
    n_paper = distill.default_config("paper", other).iterations
    return {"dataset": name, "preset": preset, "iterations_timed": args.idc_iters, "s_per_it_all_five": rows,
            f"{other}_vs_{base}": rows[other] / rows[base],
            f"paper_run_{other}_minutes_projected": rows[other] * n_paper / 60}


def step_mtt(args, device: str) -> dict:
    """MTT at the paper settings: expert epochs per remedy, the matching loop per iteration, peak memory."""
    from dataclasses import replace as _replace

    from bench import bench_mtt as B
    from engine import data, distill
    train = data.load_split(_dataset(args), 0.05, "train", 0, args.data_root)
    preset = "tiny" if args.smoke else "paper"
    cfg = _replace(distill.config_for(preset, "mtt", 10 if not args.smoke else 2), device=device)
    dev = torch.device(device)
    experts = B.expert_epoch_seconds(train, cfg, dev)
    loops = {}
    for methods in (("vanilla",), distill.METHODS):
        s, peak = B.loop_seconds(train, cfg, methods, args.mtt_iters, dev)
        loops["+".join(methods)] = {"s_per_it": s, "peak_mb": peak}
    five = loops["+".join(distill.METHODS)]["s_per_it"]
    expert_min = sum(experts.values()) * cfg.options.num_experts * cfg.options.expert_train_epochs / 60
    return {"dataset": train.dataset, "preset": preset, "s_per_expert_epoch": experts, "loop": loops,
            "experts_all_five_minutes_projected": expert_min,
            "paper_run_all_five_minutes_projected": five * cfg.iterations / 60}


def step_reproduce(args, device: str) -> dict:
    """A published row reproduced on the GPU: the same plan, Ray cell and table as `reproduce`."""
    from engine import distill, reproduce
    table = reproduce.get_table("fairdd-table1")
    fashion = _dataset(args) == "bg-fmnist"
    filters = {"dataset": {"bg-fmnist" if fashion else "cmnist"}, "algorithm": {"dm"}, "ipc": {"10"}}
    its = 2 if args.smoke else args.reproduce_iters
    overrides = {"distill": {"iterations": its}, "eval": {"full_set_epochs": 0},
                 "eval_seeds": 1 if args.smoke else args.audit_eval_seeds}
    if args.smoke:
        overrides["eval"].update(epochs=2)
    plan = reproduce.make_plan(table, reproduce.select(table, filters), "tiny" if args.smoke else "paper",
                               args.data_root, stand_ins=not fashion, device=device, overrides=overrides)
    t = time.perf_counter()
    result = reproduce.reproduce(plan, gpus_per_cell=1 if device == "cuda" else 0)
    seconds = time.perf_counter() - t
    from engine.figures.reproduce import markdown
    from engine.store import RunStore
    n_paper = distill.default_config("paper", "dm").iterations
    store = RunStore()
    timings = store.open(plan.audits[0].cell.run_id).results()["timings"]
    rest = sum(v for k, v in timings.items() if k != "distill")
    return {"seconds": seconds, "iterations": its, "computed": result["computed"], "timings": timings,
            "table": markdown(result),
            "rows": [{k: c.get(k) for k in ("paper_dataset", "method", "status", "agreement", "stand_in")}
                     | {m: c["metrics"][m]["ours"] for m in reproduce.METRICS} for c in result["rows"] + result["stand_ins"]],
            # the distillation scaled to the paper's iterations, the rest (probe, evaluations) as measured
            "paper_audit_minutes_projected": (timings["distill"] * n_paper / its + rest) / 60}

def step_eval(args, device: str) -> dict:
    """Evaluation trainings (bench/bench_eval.py): 18 quick trainings at IPC 10, one by one (eager) against all
    18 as one batched model, and one training alone; seconds per training, GFLOP/s beside a matrix product's."""
    from bench import bench_eval as B
    from engine import data, evaluate
    train = data.load_split("colored-digits", 0.05, "train", 0)
    dev = torch.device(device)
    cfg = evaluate.get_preset("tiny" if args.smoke else "quick")
    ipc, n, epochs = (1, 3, 2) if args.smoke else (10, 18, args.eval_epochs)
    jobs = B.jobs_for(train, ipc, n)
    compile_ok = dev.type == "cuda"  # the smoke run on a CPU checks the arithmetic, not the compiler
    rows = {"one_eager": B.time_case(jobs[:1], cfg, dev, "eager", epochs, train.num_classes, False, compile_ok),
            "all_eager": B.time_case(jobs, cfg, dev, "eager", epochs, train.num_classes, False, compile_ok),
            "all_batched": B.time_case(jobs, cfg, dev, "batched", epochs, train.num_classes, False, compile_ok)}
    speedup = rows["all_eager"]["timed_s"] / rows["all_batched"]["timed_s"]
    return {"ipc": ipc, "trainings": n, "epochs_timed": epochs, "rows": rows, "matmul_gflops": B.matmul_gflops(dev),
            "batched_speedup": speedup, "targets_met": {"batched_5x": speedup >= TARGETS["eval_batched_speedup_min"]}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--data-root", default=None, help="folder with FashionMNIST/raw (bg-fmnist); default: Debian's")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: check the script itself")
    ap.add_argument("--budget", type=float, default=330, help="seconds; steps that would start later are skipped")
    ap.add_argument("--dm-iters", type=int, default=10)
    ap.add_argument("--idc-iters", type=int, default=2)
    ap.add_argument("--mtt-iters", type=int, default=3)
    ap.add_argument("--supcon-steps", type=int, default=200)
    ap.add_argument("--audit-iters", type=int, default=500)
    ap.add_argument("--audit-eval-seeds", type=int, default=2)
    ap.add_argument("--reproduce-iters", type=int, default=1000)
    ap.add_argument("--pytest-timeout", type=int, default=150)
    ap.add_argument("--eval-epochs", type=int, default=30, help="timed epochs of the evaluation step's trainings")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    home = tempfile.mkdtemp(prefix="ddaudit-gpu-check-")
    os.environ.setdefault("DDAUDIT_HOME", home)  # a fresh machine: cold caches, as a new user has
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "targets": TARGETS, "steps": {}}
    env = step_env(args)
    report["env"] = env
    device = env["device"]
    steps = [("pytest_cuda", lambda: step_pytest(args)), ("eval_batched", lambda: step_eval(args, device)),
             ("dm_paper", lambda: step_dm(args, device)),
             ("idc_dc_paper", lambda: step_pair(args, device, "dc", "idc")),
             ("dream_idc_paper", lambda: step_pair(args, device, "idc", "dream")),
             ("cafe_dm_paper", lambda: step_pair(args, device, "dm", "cafe")),
             ("supcon_paper", lambda: step_supcon(args, device)), ("kde_60000x128", lambda: step_kde(args, device)),
             ("audit_bg_fmnist_paper", lambda: step_audit(args, device)),
             ("mtt_paper", lambda: step_mtt(args, device)),
             ("reproduce_paper_row", lambda: step_reproduce(args, device))]
    for name, fn in steps:
        elapsed = time.perf_counter() - t0
        if elapsed > args.budget:
            report["steps"][name] = {"skipped": f"over the {args.budget:.0f} s budget at {elapsed:.0f} s"}
        else:
            t = time.perf_counter()
            try:
                res = fn()
                res["ok"] = "error" not in res and res.get("returncode", 0) == 0
            except Exception as exc:  # recorded: the next step still runs and the JSON says what broke
                import traceback
                res = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}
            res["step_seconds"] = round(time.perf_counter() - t, 2)
            report["steps"][name] = res
        report["total_seconds"] = round(time.perf_counter() - t0, 2)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        print(f"[{report['total_seconds']:6.1f} s] {name}: "
              + json.dumps({k: v for k, v in report["steps"][name].items() if k not in ("tail", "traceback", "table")},
                           default=str)[:600], flush=True)
    print(f"wrote {args.out} in {report['total_seconds']:.0f} s", flush=True)
    return report


if __name__ == "__main__":
    main(None)
