"""The published tables as data: engine/tables/published.csv (one row per paper, table, dataset, backbone,
method, IPC, conflict ratio, with the published accuracy / DEO_M / DEO_A and their std where given) and
tables.json (each table's title and citation), parsed and checked; the row filters of `reproduce --rows`."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import CorruptArtifact, InvalidArgument

TABLES_DIR = Path(__file__).resolve().parents[1] / "tables"
METRICS = ("accuracy", "deo_m", "deo_a")
FILTER_KEYS = ("dataset", "algorithm", "method", "ipc", "ratio", "source")
ALIASES = {"backbone": "algorithm", "conflict_ratio": "ratio", "paper_dataset": "dataset"}


@dataclass(frozen=True)
class Published:
    """One published number: value, std (None: not given) and the half unit of its last printed digit."""

    value: float
    std: float | None
    rounding: float


@dataclass(frozen=True)
class Row:
    """One published row: (paper table, dataset, backbone, method, IPC, ratio) and its numbers."""

    table: str
    source: str          # the paper's table or section
    paper_dataset: str   # the dataset as the paper names it
    dataset: str         # ddaudit's registry name
    stand_in: str | None
    algorithm: str
    method: str          # a registry method, or "full" (the whole biased training set)
    ipc: int
    conflict_ratio: float
    published: dict      # metric -> Published
    note: str = ""

    @property
    def setting(self) -> tuple:
        """The audit that answers this row (its dataset, backbone, IPC, ratio)."""
        return (self.dataset, self.algorithm, self.ipc, self.conflict_ratio)


@dataclass(frozen=True)
class Table:
    """A published table: its id (`reproduce TABLE`), title, citation and rows."""

    id: str
    title: str
    citation: str
    note: str
    rows: tuple[Row, ...]


def _number(text: str, where: str) -> tuple[float, float] | None:
    """'22.26' -> (22.26, 0.005); '' -> None."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise CorruptArtifact(f"{where}: {text!r} is not a number", "fix the published table file") from None
    decimals = len(text.partition(".")[2])
    return value, 0.5 * 10 ** -decimals


def _row(rec: dict, where: str) -> Row:
    published = {}
    for m in METRICS:
        v = _number(rec[m], f"{where} {m}")
        s = _number(rec[f"{m}_std"], f"{where} {m}_std")
        if v is not None:
            published[m] = Published(v[0], s[0] if s else None, v[1])
        elif s is not None:
            raise CorruptArtifact(f"{where}: {m}_std without {m}", "fix the published table file")
    if not published:
        raise CorruptArtifact(f"{where}: no published number", "fix the published table file")
    try:
        ipc, ratio = int(rec["ipc"]), float(rec["conflict_ratio"])
    except ValueError:
        raise CorruptArtifact(f"{where}: bad ipc {rec['ipc']!r} or conflict_ratio {rec['conflict_ratio']!r}",
                              "fix the published table file") from None
    return Row(rec["table"], rec["source"], rec["paper_dataset"], rec["dataset"], rec["stand_in"] or None,
               rec["algorithm"], rec["method"], ipc, ratio, published, rec["note"])


def load_tables(folder: Path | None = None) -> dict[str, Table]:
    """Every published table of `folder` (default TABLES_DIR; tables.json: titles and citations; published.csv:
    the rows)."""
    folder = TABLES_DIR if folder is None else folder
    meta = json.loads((folder / "tables.json").read_text(encoding="utf-8"))
    rows: dict[str, list[Row]] = {name: [] for name in meta}
    with open(folder / "published.csv", encoding="utf-8", newline="") as f:
        for i, rec in enumerate(csv.DictReader(f), start=2):
            where = f"{folder / 'published.csv'} line {i}"
            if rec["table"] not in rows:
                raise CorruptArtifact(f"{where}: table {rec['table']!r} is not in tables.json", "add it there")
            rows[rec["table"]].append(_row(rec, where))
    return {name: Table(name, m["title"], m["citation"], m.get("note", ""), tuple(rows[name]))
            for name, m in meta.items()}


@lru_cache(maxsize=1)
def tables() -> dict[str, Table]:
    """The tables of TABLES_DIR (engine/tables/), read once."""
    return load_tables()


def get_table(name: str, available: dict[str, Table] | None = None) -> Table:
    """A table by id, or one clear error listing them."""
    available = tables() if available is None else available
    if name not in available:
        raise InvalidArgument(f"unknown table {name!r}",
                              f"use one of: {', '.join(available)} (python -m engine reproduce --list)")
    return available[name]


def _field(row: Row, key: str) -> str:
    value = {"ratio": row.conflict_ratio, "ipc": row.ipc}.get(key, getattr(row, key, None))
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_filter(text: str | None) -> dict[str, set[str]]:
    """'dataset=bg-fmnist,ipc=10,algorithm=dm' -> {key: {values}}; a key given twice keeps both values (or)."""
    out: dict[str, set[str]] = {}
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        key, eq, value = (s.strip() for s in part.partition("="))
        key = ALIASES.get(key, key)
        if not eq or not value or key not in FILTER_KEYS:
            raise InvalidArgument(f"bad row filter {part!r}",
                                  f"write KEY=VALUE pairs, comma-separated, with keys {', '.join(FILTER_KEYS)} "
                                  "(e.g. --rows dataset=bg-fmnist,algorithm=dm,ipc=10)")
        out.setdefault(key, set()).add(value)
    return out


def select(table: Table, filters: dict[str, set[str]]) -> list[Row]:
    """The table's rows that pass every filter; a value the table does not have is an error naming those it has."""
    for key, values in filters.items():
        have = sorted({_field(r, key) for r in table.rows})
        for v in values:
            if v not in have and not (key == "ratio" and _float_in(v, have)):
                raise InvalidArgument(f"table {table.id} has no row with {key}={v}",
                                      f"use one of: {', '.join(have)}")
    return [r for r in table.rows if all(_field(r, k) in vs or (k == "ratio" and any(_float_eq(v, r.conflict_ratio)
                                                                                      for v in vs))
                                         for k, vs in filters.items())]


def _float_eq(text: str, value: float) -> bool:
    try:
        return math.isclose(float(text), value)
    except ValueError:
        return False


def _float_in(text: str, have: list[str]) -> bool:
    return any(_float_eq(text, float(h)) for h in have)
