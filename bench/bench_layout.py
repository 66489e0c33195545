"""CPU memory layout of the ConvNet forward: channels_last vs contiguous, one batch vs row chunks.

Times the no-autograd forward of a real batch (the shared DM forward) and a forward+backward of a
synthetic-sized batch, at the quick (width 32) and paper (width 128) widths, 28x28 images, and
prints the best and median of a few repeats. `ConvNet.embed_rows` (contiguous, chunks of
`nets.cpu_chunk_rows`) is what the engine uses on CPU.
`python -m bench.bench_layout [--repeats 5]`
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine.device import describe
from engine.nets import ConvNet, ConvNetConfig, cpu_chunk_rows


def _time(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts)


def run(width: int, rows: int, grad: bool, repeats: int) -> list[dict]:
    """One row per layout: seconds (best, median) for a batch of `rows` images."""
    torch.manual_seed(0)
    cfg = ConvNetConfig(channels=3, num_classes=10, image_size=28, width=width)
    net = ConvNet(cfg).requires_grad_(grad)
    x = torch.randn(rows, 3, 28, 28)
    out = []
    layouts = (("channels_last, one batch", torch.channels_last, False),
               ("contiguous, one batch", torch.contiguous_format, False),
               (f"contiguous, chunks of {cpu_chunk_rows(cfg)} (engine)", torch.contiguous_format, True))
    for name, fmt, chunked in layouts:
        net = net.to(memory_format=fmt)
        xx = x.contiguous(memory_format=fmt).requires_grad_(grad)
        embed = net.embed_rows if chunked else net.embed

        def step() -> None:
            if grad:
                embed(xx).square().sum().backward()
            else:
                with torch.no_grad():
                    embed(xx)
        best, med = _time(step, repeats)
        out.append({"width": width, "rows": rows, "grad": grad, "layout": name, "best_s": best, "median_s": med})
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="bench_layout")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"device: {describe(torch.device('cpu'))}")
    rows = []
    for width, n, grad in ((32, 640, False), (128, 2560, False), (32, 300, True), (128, 300, True)):
        for r in run(width, n, grad, args.repeats):
            rows.append(r)
            what = "forward+backward" if grad else "forward, no grad"
            print(f"width {width:3d}  {n:5d} images  {what:17s}  {r['layout']:34s}  "
                  f"best {r['best_s']:.3f} s  median {r['median_s']:.3f} s")
    return rows


if __name__ == "__main__":
    main()
