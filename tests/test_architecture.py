"""The layering of the package is a contract (pyproject.toml, [tool.importlinter]): cli -> viz -> tasks ->
training | decoding | evaluation -> models (models/hf above the models it converts) -> layers -> attention,
nothing importing upward, no circle; model families independent; data and tokenizers import no model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", proc.stdout)
    assert kept is not None and int(kept.group(1)) >= 4 and kept.group(2) == "0", proc.stdout[-2000:]


def test_models_import_no_task_trainer_or_front_end() -> None:
    """No model module imports its trainer (the review of issue 14): checked on the source text too, so
    that a lazy import inside a function is caught as well."""
    for path in (ROOT / "src" / "attnkit" / "models").rglob("*.py"):
        text = path.read_text()
        for banned in ("attnkit.training", "attnkit.tasks", "attnkit.cli", "attnkit.viz"):
            assert banned not in text, f"{path.relative_to(ROOT)} mentions {banned}"
