"""ddaudit works under an ASCII locale (LC_ALL=C, PYTHONUTF8=0), as on many clusters and CI machines."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([ROOT / "app.py", *(p for d in ("engine", "ui", "pages", "bench", "tests")
                                      for p in (ROOT / d).rglob("*.py"))])
ASCII_ENV = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
             "DDAUDIT_HOME": os.environ.get("DDAUDIT_HOME", "")}


def _text_calls_without_encoding(tree: ast.AST) -> list[int]:
    """Lines of open()/read_text()/write_text() calls in text mode that leave the encoding to the locale."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        keywords = {k.arg for k in node.keywords}
        if "encoding" in keywords:
            continue
        if name in ("read_text", "write_text"):
            lines.append(node.lineno)
        elif name == "open" and (isinstance(func, ast.Name) or isinstance(func, ast.Attribute)
                                 and getattr(func.value, "id", None) not in ("os", "Image", "store", "self")):
            pos = 1 if isinstance(func, ast.Name) else 0
            mode = node.args[pos].value if len(node.args) > pos and isinstance(node.args[pos], ast.Constant) else None
            mode = next((k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)),
                        mode)
            if not (isinstance(mode, str) and "b" in mode):
                lines.append(node.lineno)
    return lines


def test_every_text_file_names_its_encoding() -> None:
    """The sources hold "±" and "×": reading or writing text with the locale's codec breaks under LC_ALL=C."""
    bad = {str(p.relative_to(ROOT)): lines for p in SOURCES
           if (lines := _text_calls_without_encoding(ast.parse(p.read_text(encoding="utf-8"))))}
    assert len(SOURCES) > 50 and not bad, f"text opened without encoding=\"utf-8\" (file: lines): {bad}"


def test_scan_finds_a_missing_encoding() -> None:
    """The scan above is not vacuous: it flags each kind of call it checks."""
    tree = ast.parse("p.read_text()\np.write_text('x')\nopen(f)\nopen(f, 'a')\nopen(f, 'rb')\n"
                     "p.read_text(encoding='utf-8')\nos.open(f, 0)\n")
    assert _text_calls_without_encoding(tree) == [1, 2, 3, 4]


def test_cli_prints_non_ascii_help_under_an_ascii_locale() -> None:
    """`weights --help` holds "∝": under an ASCII terminal it is escaped, not a UnicodeEncodeError traceback."""
    proc = subprocess.run([sys.executable, "-m", "engine", "weights", "--help"], cwd=ROOT, env=ASCII_ENV,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    assert b"w \\u221d f^(-1/T)" in proc.stdout
