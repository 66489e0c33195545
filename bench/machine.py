"""What every benchmark says of the machine it measured on: the load average, and a one-line header."""
from __future__ import annotations

import os

import torch

from engine.allocator import tune_cpu_allocator


def load_average() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def announce() -> None:
    """Tune the allocator as the CLI does, then print torch's version, its threads and the load average."""
    tune_cpu_allocator()
    print(f"torch {torch.__version__}; {torch.get_num_threads()} threads; load average {load_average():.1f}",
          flush=True)
