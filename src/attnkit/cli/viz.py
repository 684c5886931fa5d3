"""`attnkit viz RUN|HF_DIR --text TEXT [--target TEXT] --out DIR [--layer L] [--head H] [--html]`.

Writes PNG heatmaps of the attention weights with tokens on both axes: ``<kind>.png``, a grid of all
layers x heads for each kind of attention the model has (encoder, decoder, cross), and with ``--layer``
and/or ``--head`` single heads as ``<kind>-layer<L>-head<H>.png``; with ``--html`` also ``viewer.html``,
a self-contained page to browse every layer and head. Prints the written paths, one per line.
"""

from __future__ import annotations

import argparse

from attnkit.cli.common import add_dtype_arg, dtype_note
from attnkit.cli.textarg import utf8_text
from attnkit.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("viz", help="attention heatmaps (PNG) and an HTML viewer of a model's weights",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="RUN|HF_DIR", help="translation/GPT/BERT run, or Hugging Face GPT-2/BERT dir")
    p.add_argument("--text", required=True, type=utf8_text, help="input text (translation: the source sentence)")
    p.add_argument("--target", type=utf8_text,
                   help="translation: the target sentence (default: the model's greedy translation)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--layer", type=int, help="also draw single heads of this layer")
    p.add_argument("--head", type=int, help="also draw this head (of every layer, or of --layer)")
    p.add_argument("--html", action="store_true", help="also write viewer.html")
    p.add_argument("--max-tokens", type=int, default=256, help="longest input accepted (default %(default)s)")
    add_dtype_arg(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attnkit.viz.grid import save_pngs
    from attnkit.viz.html import write_viewer
    from attnkit.viz.load import attention_maps, open_model

    if args.max_tokens < 1:
        raise InputError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    view = open_model(args.model, args.dtype)
    dtype_note(view.run, args.dtype)
    maps = attention_maps(view, args.text, args.target, args.max_tokens)
    for amap in maps.maps:
        n_layers, n_heads = amap.weights.shape[:2]
        if args.layer is not None and not 0 <= args.layer < n_layers:
            raise InputError(f"--layer {args.layer}: the {amap.kind} attention has layers 0..{n_layers - 1}")
        if args.head is not None and not 0 <= args.head < n_heads:
            raise InputError(f"--head {args.head}: the {amap.kind} attention has heads 0..{n_heads - 1}")
    paths = save_pngs(maps, args.out, args.layer, args.head)
    if args.html:
        paths.append(write_viewer(maps, Path(args.out) / "viewer.html"))
    for p in paths:
        print(p)
    return 0
