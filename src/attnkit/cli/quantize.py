"""``attnkit quantize DIR --dtype int8|bf16``: quantize a model once and save it in its directory.

Writes ``DIR/model.<dtype>.safetensors`` (the quantized tensors, with a SHA-256 of the fp32 weights they
were made from); every command's ``--dtype <dtype>`` (and ``open_run(DIR, dtype=...)``) then loads it
instead of quantizing again, and refuses it with a one-line error once the fp32 weights change
(:mod:`attnkit.tasks.precision`). DIR is any attnkit run or Hugging Face directory that ``open_run`` opens.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="save a model's int8 / bf16 weights in its directory (quantize once)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="RUN|HF_DIR", help="an attnkit run or a Hugging Face directory")
    p.add_argument("--dtype", choices=("int8", "bf16"), required=True, help="the precision to save")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from attnkit.layers.quant import weight_bytes
    from attnkit.tasks.precision import save_quantized_run
    from attnkit.tasks.runs import open_run

    run = open_run(args.model)
    before = weight_bytes(run.model)
    path = save_quantized_run(run, args.dtype)
    print(f"attnkit: {args.dtype} weights of {run.path} ({weight_bytes(run.model) / 1e6:.1f} MB, fp32 "
          f"{before / 1e6:.1f} MB) -> {path}", file=sys.stderr)
    print(path)
    return 0
