"""A classroom on one server: the owner's limits on what guests may start (one JSON or TOML file), and the
streamlit command line of `python -m engine serve` (server mode: roles, XSRF protection, upload limit).

The engine decides nothing about who is who (the dashboard's ui/roles.py does); here are only the limits,
read and checked once, and the refusal text of a guest's request that exceeds them, in words a student reads.
"""
from __future__ import annotations

import json
import os
import secrets
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import data, distill
from .errors import InvalidArgument

SERVE_ENV = "DDAUDIT_SERVE"  # set by `engine serve` for the app: server mode (roles), "" = the one-user app
LIMITS_ENV = "DDAUDIT_LIMITS"  # the limits file the app reads (set by `engine serve --limits`)
SECRET_ENV = "DDAUDIT_OWNER_SECRET"  # the owner's secret (or --secret-file)
MIN_SECRET = 8
PRESETS = ("quick", "paper")


def _default_methods() -> tuple[str, ...]:
    return tuple(distill.METHODS)


@dataclass(frozen=True)
class Limits:
    """What a guest may start; the owner may do anything. Sizes as written ('2G'), counts as numbers."""

    presets: tuple[str, ...] = ("quick",)
    max_ipc: int = 10
    max_iterations: int = 1000  # an explicit iteration count above this is refused (0 = the preset's)
    max_eval_seeds: int = 3
    methods: tuple[str, ...] = field(default_factory=_default_methods)
    backbones: tuple[str, ...] = ("dm", "dc")
    datasets: tuple[str, ...] = ("colored-digits",)
    sweeps: bool = False
    uploads: bool = True
    upload_mb: int = 20  # a guest's upload
    owner_upload_mb: int = 200  # the server's own limit (Streamlit's maxUploadSize): the owner's uploads
    max_waiting: int = 5  # a browser session's runs waiting or computing at once
    guest_disk: str = "2G"  # the guests' runs together; the oldest are collected beyond it
    owner_emails: tuple[str, ...] = ()  # with Streamlit's login configured: these signed-in users are owners

    @property
    def guest_disk_bytes(self) -> int:
        from .store.gc import parse_size
        return parse_size(self.guest_disk)

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _fix(path: str | None) -> str:
    where = f"in {path}" if path else "in the limits file"
    return f"correct it {where} (docs/SERVE.md lists every field and its default)"


def _names(key: str, value, known: tuple[str, ...], path: str | None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"limits: {key} must be a list of names, not {value!r}", _fix(path))
    unknown = [v for v in value if known and v not in known]
    if unknown:
        raise InvalidArgument(f"limits: {key} names {unknown[0]!r}, which is not one of {', '.join(known)}",
                              _fix(path))
    return tuple(value)


def _number(key: str, value, low: int, path: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgument(f"limits: {key} must be a whole number >= {low}, not {value!r}", _fix(path))
    return value


def parse_limits(raw: dict, path: str | None = None) -> Limits:
    """Limits from a dict (a parsed file): unknown keys and bad values are refused, one clear error each."""
    if not isinstance(raw, dict):
        raise InvalidArgument("limits: the file must hold a table of settings", _fix(path))
    known = {f.name for f in fields(Limits)}
    extra = sorted(set(raw) - known)
    if extra:
        raise InvalidArgument(f"limits: unknown setting {extra[0]!r}", f"use only {', '.join(sorted(known))}; "
                              + _fix(path))
    out = {}
    for key, value in raw.items():
        if key == "presets":
            out[key] = _names(key, value, PRESETS, path)
        elif key == "methods":
            out[key] = _names(key, value, tuple(distill.METHODS), path)
        elif key == "backbones":
            out[key] = _names(key, value, tuple(distill.algorithms()), path)
        elif key == "datasets":
            out[key] = _names(key, value, tuple(data.REGISTRY), path)
        elif key == "owner_emails":
            out[key] = _names(key, value, (), path)
        elif key in ("sweeps", "uploads"):
            if not isinstance(value, bool):
                raise InvalidArgument(f"limits: {key} must be true or false, not {value!r}", _fix(path))
            out[key] = value
        elif key == "guest_disk":
            from .store.gc import parse_size
            try:
                parse_size(str(value))
            except InvalidArgument as exc:
                raise InvalidArgument(f"limits: guest_disk: {exc.problem}", f"{exc.fix}; {_fix(path)}") from None
            out[key] = str(value)
        else:
            out[key] = _number(key, value, 0 if key == "max_iterations" else 1, path)
    return Limits(**out)


def read_limits(path: str | os.PathLike | None) -> Limits:
    """The limits file (.json, or .toml), or the defaults when path is None."""
    if path is None or str(path) == "":
        return Limits()
    p = Path(path)
    if not p.is_file():
        raise InvalidArgument(f"no limits file at {p}", "give the path of a .toml or .json file "
                              "(docs/SERVE.md has an example), or leave --limits out for the defaults")
    text = p.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"the limits file {p} cannot be read: {exc}",
                              "write it as TOML (key = value lines) or JSON; docs/SERVE.md has an example") from None
    return parse_limits(raw, str(p))


def serving() -> bool:
    """Whether this process is a server started by `engine serve` (roles apply)."""
    return os.environ.get(SERVE_ENV, "") == "1"


def current_limits() -> Limits:
    """The limits of this server (its DDAUDIT_LIMITS file, else the defaults)."""
    return read_limits(os.environ.get(LIMITS_ENV) or None)


def request_refusal(limits: Limits, *, dataset: str, preset: str, algorithm: str, methods: list[str], ipc: int,
                    iterations: int | None = None, eval_seeds: int = 1) -> str | None:
    """Why a guest may not start this request, in words with what they may do instead; None when allowed.
    `preset` is the preset the guest chose (quick/paper), before any tiny-mode substitution."""
    def only(what: str, allowed: tuple) -> str:
        return ", ".join(allowed) if allowed else f"no {what}"
    if dataset not in limits.datasets:
        return (f"Guests may not run on {dataset} on this server. You may pick {only('dataset', limits.datasets)} "
                "in the sidebar, and browse every finished run.")
    if preset not in limits.presets and preset != "tiny":  # tiny: seconds, always fine
        return (f"The {preset} preset is for the server's owner: its runs hold the machine's compute slot for "
                f"a long time. You may use the {only('preset', limits.presets)} preset.")
    if algorithm not in limits.backbones:
        return (f"Guests may not start {algorithm} runs on this server. You may choose "
                f"{only('backbone', limits.backbones)}.")
    barred = [m for m in methods if m not in limits.methods]
    if barred:
        return (f"Guests may not start {', '.join(barred)} on this server. You may choose "
                f"{only('method', limits.methods)}.")
    if ipc > limits.max_ipc:
        return f"Guests may start at most {limits.max_ipc} images per class here (you asked {ipc}): lower the IPC."
    if iterations and limits.max_iterations and iterations > limits.max_iterations:
        return (f"Guests may start at most {limits.max_iterations} iterations here (you asked {iterations}): "
                "lower it, or leave 0 for the preset's.")
    if eval_seeds > limits.max_eval_seeds:
        return (f"Guests may ask at most {limits.max_eval_seeds} evaluation trainings per set here "
                f"(you asked {eval_seeds}): lower it.")
    return None


def settle_run(run_id: str, guest: bool, existed: bool, cap_bytes: int) -> list[str]:
    """After a dashboard job's run (finished or not): a run a guest created is marked a guest's and the guests'
    runs are brought under the disk cap (oldest first, this one spared); a run the owner started becomes the
    owner's. Returns the ids collected."""
    from .store import RunStore, gc
    store = RunStore()
    if not guest:
        gc.mark_guest(store, run_id, False)
        return []
    if not existed:
        gc.mark_guest(store, run_id)
    return gc.collect_guest_runs(store, cap_bytes, spare=(run_id,))


def owner_secret(secret_file: str | None = None) -> tuple[str, str]:
    """(secret, where it came from): --secret-file, else DDAUDIT_OWNER_SECRET, else a fresh random one."""
    if secret_file:
        p = Path(secret_file)
        if not p.is_file():
            raise InvalidArgument(f"no secret file at {p}", "give a file holding the owner's secret on one line")
        secret, where = p.read_text(encoding="utf-8").strip(), f"the file {p}"
    elif os.environ.get(SECRET_ENV, "").strip():
        secret, where = os.environ[SECRET_ENV].strip(), SECRET_ENV
    else:
        return secrets.token_urlsafe(12), "new"
    if len(secret) < MIN_SECRET:
        raise InvalidArgument(f"the owner's secret from {where} is shorter than {MIN_SECRET} characters",
                              "choose a longer one: guests must not guess it")
    return secret, where


def streamlit_args(address: str, port: int, limits: Limits) -> list[str]:
    """`streamlit run app.py` options of server mode: the address and port, headless, no usage statistics,
    XSRF protection on, uploads capped at the owner's size (a guest's smaller one is checked by the app), no error
    details (tracebacks) in the browser."""
    return ["run", "app.py", "--server.address", address, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.enableXsrfProtection", "true",
            "--server.enableCORS", "true", "--server.maxUploadSize", str(max(limits.upload_mb, limits.owner_upload_mb)),
            "--client.showErrorDetails", "none", "--browser.serverAddress", address]
