"""Device selection: CUDA with mixed precision when present, CPU otherwise."""
from __future__ import annotations

import contextlib
import os

import torch

from .errors import InvalidArgument


def pick_device(preference: str | None = None) -> torch.device:
    """Resolve 'auto' | 'cpu' | 'cuda[:N]' (or $DDAUDIT_DEVICE) to a torch.device."""
    pref = (preference or os.environ.get("DDAUDIT_DEVICE") or "auto").lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgument(f"device {pref!r} was asked for but CUDA is not available",
                              "use --device cpu (or auto)")
    if pref != "cpu" and not pref.startswith("cuda"):
        raise InvalidArgument(f"unknown device {pref!r}", "use auto, cpu or cuda")
    return torch.device(pref)


def autocast(device: torch.device):
    """bf16/fp16 autocast on CUDA (DDAUDIT_AMP=0 turns it off: float32 there too); a no-op context on
    CPU (keeps CPU runs bit-deterministic)."""
    if device.type == "cuda" and os.environ.get("DDAUDIT_AMP", "1") not in ("0", "false", "False"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    """Human-readable device name for the UI and logs."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
