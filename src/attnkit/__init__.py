"""attnkit: attention mechanisms and the Transformer family, verified against PyTorch and Hugging Face.

    from attnkit import open_run
    run = open_run("runs/de-en")            # any attnkit run or Hugging Face GPT-2 / BERT directory
    run.translate(["Ein Hund läuft."])
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "open_run"]


def __getattr__(name: str) -> Any:
    # Lazy: `import attnkit` (the CLI's first import) stays light; torch loads only when a run is opened.
    if name == "open_run":
        from attnkit.tasks.runs import open_run

        return open_run
    raise AttributeError(f"module 'attnkit' has no attribute {name!r}")
