"""Fully sharded data parallelism (``--shard`` under ``torchrun``): PyTorch's FSDP2, ``fully_shard``.

Each process holds 1/world of every parameter, of its gradient and of its optimizer state; a layer's
full weights are all-gathered just before its forward (and backward) and freed after, and gradients are
reduce-scattered, averaged over the processes as DDP averages them, so a step computes what the DDP step
(and the one-process step over the same global batch) computes. Every
:class:`~attnkit.layers.blocks.TransformerLayer` is its own unit, the rest of the model (embeddings,
final norm, output head: tied weights stay together) the root unit.

Checkpoints keep the run-directory format of unsharded training: the full (consolidated) weights in
``model.safetensors``, ready for inference, and the optimizer state as ``Optimizer.state_dict()`` writes it
for the unsharded model (state keyed by parameter index), so a sharded run resumes on any number of
processes, sharded or not, and an unsharded run resumes sharded. Gathering them is collective: every
process calls :func:`full_model_state` / :func:`full_optimizer_state`, the main one writes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from attnkit.layers.blocks import TransformerLayer

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_model(model: nn.Module) -> nn.Module:
    """Shard ``model`` in place over the default process group (one unit per TransformerLayer, then the
    root) and return it. Build the optimizer afterwards, from its (now sharded) parameters."""
    for module in list(model.modules()):
        if isinstance(module, TransformerLayer):
            fully_shard(module)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def _aliases(model: nn.Module) -> dict[str, str]:
    """{name: the first name of the same parameter} for tied parameters (the output head and embedding)."""
    first: dict[int, str] = {}
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[name] = first[id(p)]
        else:
            first[id(p)] = name
    return out


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The consolidated weights (CPU tensors) on the main process, {} on the others; tied weights share one
    tensor, so the checkpoint stores them once as unsharded training does. Collective."""
    state = get_model_state_dict(model, options=_FULL)
    for alias, name in _aliases(model).items():
        if alias in state:
            state[alias] = state[name]
    return state


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load consolidated weights (every process passes the whole state; each keeps its shard)."""
    # Each tensor is scattered in turn, so every process must go through them in one order: the model's
    # (a dict read from safetensors may list them in another order in each process).
    ordered = {k: state[k] for k in model.state_dict() if k in state}
    set_model_state_dict(model, ordered, options=StateDictOptions(full_state_dict=True))


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of the optimizer's parameters in the order ``state_dict`` numbers them."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state of the unsharded model (``{"state": {index: ...}, "param_groups": [...]}``) on
    the main process, {} on the others. Collective."""
    full = get_optimizer_state_dict(model, optimizer, options=_FULL)
    if not full:
        return {}
    index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]
    return {"state": {index[n]: s for n, s in full["state"].items()}, "param_groups": groups}


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an unsharded optimizer state (as :func:`full_optimizer_state` or ``Optimizer.state_dict()``
    writes it) into the sharded optimizer."""
    names = _param_names(model, optimizer)
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    full = {"state": {names[i]: s for i, s in state["state"].items()}, "param_groups": groups}
    full["state"] = {n: full["state"][n] for n in names if n in full["state"]}  # one order everywhere, as above
    set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))


def total_norm(norm: torch.Tensor) -> float:
    """``clip_grad_norm_``'s result as a float (over sharded gradients it is a DTensor)."""
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
