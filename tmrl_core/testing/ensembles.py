"""Comparing a batched :class:`~tmrl_core.nn.EnsembleMLP` with separate MLPs (tests and benchmarks of ensembles).

An ensemble must compute exactly what ``n`` separate :func:`~tmrl_core.nn.mlp` modules with the same weights compute;
these helpers copy weights between the two forms so that a test can check it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tmrl_core.nn import EnsembleMLP, mlp


@torch.no_grad()
def load_ensemble_members(ensemble: EnsembleMLP, members: Sequence[nn.Sequential]) -> None:
    """Copy the weights of ``n`` separate :func:`~tmrl_core.nn.mlp` modules of the ensemble's shape into it."""
    if len(members) != ensemble.n:
        raise ValueError(f"expected {ensemble.n} members, got {len(members)}")
    for i, member in enumerate(members):
        linears = [m for m in member if isinstance(m, nn.Linear)]
        for layer, linear in zip(ensemble.layers, linears, strict=True):
            layer.weight[i].copy_(linear.weight.T)
            layer.bias[i, 0].copy_(linear.bias)
        norms = [m for m in member if isinstance(m, nn.LayerNorm)]
        for ensemble_norm, norm in zip(ensemble.norms or [], norms, strict=True):
            ensemble_norm.weight[i, 0].copy_(norm.weight)
            ensemble_norm.bias[i, 0].copy_(norm.bias)


@torch.no_grad()
def ensemble_member(ensemble: EnsembleMLP, i: int) -> nn.Sequential:
    """Member ``i`` of the ensemble as a separate :func:`~tmrl_core.nn.mlp` module (a copy of its current weights)."""
    module = mlp(ensemble.sizes, ensemble.activation_cls, ensemble.output_activation_cls, ensemble.layer_norm)
    linears = [m for m in module if isinstance(m, nn.Linear)]
    for layer, linear in zip(ensemble.layers, linears, strict=True):
        linear.weight.copy_(layer.weight[i].T)
        linear.bias.copy_(layer.bias[i, 0])
    norms = [m for m in module if isinstance(m, nn.LayerNorm)]
    for ensemble_norm, norm in zip(ensemble.norms or [], norms, strict=True):
        norm.weight.copy_(ensemble_norm.weight[i, 0])
        norm.bias.copy_(ensemble_norm.bias[i, 0])
    return module.to(ensemble.layers[0].weight.device)
