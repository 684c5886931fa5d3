"""Run directories written by attnkit before the tasks layer and the renamed configs (issue 14) still load
and give identical outputs: the code of main before the change (``OLD_COMMIT``, taken from the git history)
trains a tiny run of every family and records what its CLI prints; today's CLI must print the same bytes
on those directories."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "cli"))
from _runs import run_cli  # noqa: E402  (tests/cli/_runs.py)

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "1e2c687"  # main on 2026-11-27, the last commit before issue 14's moves
SOURCES = "\n".join(["twelfth of march , nineteen ninety", "the first of may , two thousand and one",
                     "july 4 1976", ""]) + "\n"


PLACEHOLDERS = {k: "@" + k for k in ("translate", "lm", "lm_bpe", "mlm", "classify")}


def commands(runs: dict[str, str]) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, stdin) run on both sides."""
    return {
        "translate greedy": (["translate", "run", runs["translate"]], SOURCES),
        "translate beam": (["translate", "run", runs["translate"], "--beam", "3"], SOURCES),
        "lm char": (["lm", "sample", runs["lm"], "--prompt", "the ", "--max-new-tokens", "24", "--temperature", "0"],
                    ""),
        "lm bpe": (["lm", "sample", runs["lm_bpe"], "--prompt", "a dog", "--max-new-tokens", "12", "--seed", "3"],
                   ""),
        "embed": (["embed", "--model", runs["mlm"], "--format", "jsonl"], "a big dog\nthe red house\n"),
        "classify": (["classify", "run", runs["classify"]], "a big dog\nthe red house\n"),
    }


OLD_SIDE = r"""
import contextlib, io, json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1] + "/src", sys.argv[1] + "/tests/cli"]
import _runs
tmp = Path(sys.argv[2])
runs = {k: str(v) for k, v in _runs.train_tiny_runs(tmp).items()}
cmds = json.loads(sys.argv[3])
out = {}
for name, (argv, stdin) in cmds.items():
    argv = [runs[a[1:]] if a.startswith("@") else a for a in argv]
    code, stdout, err = _runs.run_cli(argv, stdin.encode())
    out[name] = [code, stdout.decode("utf-8", "replace"), err]
import importlib.util, attnkit
print(json.dumps({"runs": runs, "outputs": out, "attnkit_file": attnkit.__file__,
                  "has_tasks": importlib.util.find_spec("attnkit.tasks") is not None}))
"""


@pytest.fixture(scope="module")
def old_side(tmp_path_factory: pytest.TempPathFactory) -> dict:
    old = tmp_path_factory.mktemp("old_code")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT, "src", "tests/cli/_runs.py"],
                             capture_output=True, timeout=60)
    assert archive.returncode == 0, f"git archive {OLD_COMMIT} failed: {archive.stderr.decode()[-500:]}"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(old, filter="data")
    spec = json.dumps(commands(PLACEHOLDERS))
    runs_dir = tmp_path_factory.mktemp("old_runs")
    proc = subprocess.run([sys.executable, "-c", OLD_SIDE, str(old), str(runs_dir), spec], capture_output=True,
                          text=True, timeout=600, cwd=old, env={"PYTHONPATH": "", "PATH": "/usr/bin:/bin",
                                                               "OMP_WAIT_POLICY": "PASSIVE", "HOME": str(old)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_old_code_really_is_old(old_side: dict) -> None:
    """The recorded side ran the pre-change code (no tasks layer), not this checkout's."""
    assert not old_side["has_tasks"]
    assert not Path(old_side["attnkit_file"]).is_relative_to(ROOT), old_side["attnkit_file"]


@pytest.mark.parametrize("name", list(commands(PLACEHOLDERS)))
def test_runs_written_by_the_old_code_give_identical_output(old_side: dict, name: str) -> None:
    argv, stdin = commands(old_side["runs"])[name]
    old_code, old_out, _ = old_side["outputs"][name]
    code, out, err = run_cli(argv, stdin.encode())
    assert old_code == 0 and code == 0, err
    assert out.decode("utf-8") == old_out
