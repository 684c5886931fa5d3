"""The HTML viewer in headless Chromium: it renders without errors, the URL fragment switches model part,
layer, head and hovered query, the hovered query's highlight carries its weights, and the matrix cells
of a screenshot have the colours of the weights.

Chromium is the Debian package ``chromium``; the session fixture installs it when /usr/bin/chromium is
missing and skips (with the reason) only if that installation fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.viz.html import CELL_PX, write_viewer
from attnkit.viz.weights import AttentionMap, AttentionMaps

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--window-size=1200,900", "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        try:
            subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, capture_output=True, timeout=900,
                           env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"chromium is not installed and `apt-get install -y chromium` failed: {exc}")
        path = shutil.which("chromium") or "/usr/bin/chromium"
    return path


def _maps() -> AttentionMaps:
    g = torch.Generator().manual_seed(0)

    def rows(*shape: int) -> torch.Tensor:
        return torch.softmax(torch.randn(*shape, generator=g) * 2.0, dim=-1)

    enc = AttentionMap("encoder", rows(2, 3, 6, 6), [f"src{i}" for i in range(6)], [f"src{i}" for i in range(6)])
    cross = AttentionMap("cross", rows(2, 3, 4, 6), [f"tgt{i}" for i in range(4)], [f"src{i}" for i in range(6)])
    return AttentionMaps("test", [enc, cross])


def _browse(chromium: str, page: Path, fragment: str, tmp: Path, mode: str) -> tuple[str, str]:
    """Run chromium once (``mode``: "--dump-dom" or "--screenshot=<file>"); return (stdout, stderr)."""
    profile = tmp / f"profile{abs(hash((fragment, mode)))}"
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", mode, f"{page.as_uri()}#{fragment}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp)
    return done.stdout, done.stderr


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _dom(chromium: str, page: Path, fragment: str, tmp: Path) -> str:
    dom, err = _browse(chromium, page, fragment, tmp, "--dump-dom")
    assert 'data-ready="1"' in dom, f"page did not finish rendering:\n{err[-2000:]}"
    errors = re.search(r'<div id="errors">(.*?)</div>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors
    assert _console_errors(err) == []
    return dom


def _key_weights(dom: str) -> list[float]:
    return [float(w) for w in re.findall(r'<span data-k="\d+" data-w="([0-9.]+)"', dom)]


def test_viewer_switches_kind_layer_head_and_highlights_the_hovered_query(chromium: str, tmp_path: Path) -> None:
    maps = _maps()
    page = write_viewer(maps, tmp_path / "viewer.html")
    for kind, layer, head, focus in [("cross", 1, 2, 3), ("cross", 0, 1, 0), ("encoder", 1, 0, 5)]:
        dom = _dom(chromium, page, f"kind={kind}&layer={layer}&head={head}&focus={focus}", tmp_path)
        assert f"kind={kind} layer={layer} head={head} focus={focus}" in dom
        want = maps.get(kind).weights[layer, head, focus]
        got = _key_weights(dom)
        assert len(got) == len(want)
        np.testing.assert_allclose(got, want.numpy(), atol=1.5e-3)


def test_screenshot_cells_have_the_weights_colours(chromium: str, tmp_path: Path) -> None:
    maps = _maps()
    page = write_viewer(maps, tmp_path / "viewer.html")
    fragment = "kind=cross&layer=1&head=2"
    dom = _dom(chromium, page, fragment, tmp_path)
    left = float(re.search(r'data-left="([0-9.]+)"', dom).group(1))
    top = float(re.search(r'data-top="([0-9.]+)"', dom).group(1))
    shot = tmp_path / "shot.png"
    _, err = _browse(chromium, page, fragment, tmp_path, f"--screenshot={shot}")
    assert shot.is_file(), err[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    w = maps.get("cross").weights[1, 2].numpy()
    seen = np.zeros_like(w)
    for q in range(w.shape[0]):
        for k in range(w.shape[1]):
            y, x = int(top + (q + 0.5) * CELL_PX), int(left + (k + 0.5) * CELL_PX)
            r, g, b = pixels[y, x]
            assert b > 250 and abs(r - g) < 3, (q, k, pixels[y, x])  # on the white-to-blue scale
            seen[q, k] = 1 - r / 255
    np.testing.assert_allclose(seen, w, atol=0.01)
    # The most attended key of every query is the darkest cell of its row.
    assert (seen.argmax(1) == w.argmax(1)).all()


def test_a_script_error_is_caught(chromium: str, tmp_path: Path) -> None:
    """The checks above can fail: a page whose script throws shows it in #errors and in the console log."""
    page = write_viewer(_maps(), tmp_path / "viewer.html")
    text = page.read_text()
    assert '  document.body.dataset.ready = "1";' in text
    page.write_text(text.replace('  document.body.dataset.ready = "1";', "  notDefined();"))
    dom, err = _browse(chromium, page, "kind=cross", tmp_path, "--dump-dom")
    assert "notDefined" in re.search(r'<div id="errors">(.*?)</div>', dom, re.S).group(1)
    assert any("notDefined" in line for line in _console_errors(err))


def test_viewer_is_self_contained(tmp_path: Path) -> None:
    text = write_viewer(_maps(), tmp_path / "v.html").read_text()
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert "src=" not in text  # no external scripts or images
