"""Neural-network building blocks shared by agents and environment plugins.

- :func:`mlp`: a plain multi-layer perceptron.
- :class:`FlattenEncoder`: the default observation encoder (flattens and concatenates every part of an observation).
- :func:`make_encoder`: builds the encoder an env spec supplies, or the default one.
- :class:`EnsembleLinear` / :class:`EnsembleMLP`: ``N`` independent linear layers / MLPs with stacked weights, run as
  one batched matrix product instead of a Python loop over ``N`` modules (critic ensembles).
- :class:`VmapEnsemble`: ``N`` copies of any module (e.g. a CNN encoder) run as one computation with ``torch.func``.
- :func:`polyak_update`: target-network averaging in one fused pass.

An *encoder* maps a batch of observations (a tensor for a ``Box`` space, a tuple of tensors for a ``Tuple`` space,
a dict for a ``Dict`` space; batch dimension first) to a ``(batch, out_features)`` float tensor, and has an integer
attribute ``out_features``. Agents build their heads on ``out_features`` alone, so any encoder fits any agent.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from tmrl_core.errors import IncompatibleComponentsError, PluginError
from tmrl_core.specs import resolve

__all__ = [
    "ACTIVATIONS",
    "EncoderFactory",
    "EnsembleLayerNorm",
    "EnsembleLinear",
    "EnsembleMLP",
    "FlattenEncoder",
    "VmapEnsemble",
    "make_encoder",
    "mlp",
    "polyak_update",
]

#: Activation names accepted in settings, and the module each one builds.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def _activation(activation: str | type[nn.Module]) -> type[nn.Module]:
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}") from None
    return activation


def mlp(
    sizes: Sequence[int],
    activation: str | type[nn.Module] = nn.ReLU,
    output_activation: str | type[nn.Module] = nn.Identity,
    layer_norm: bool = False,
) -> nn.Sequential:
    """A multi-layer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    ``activation`` follows every hidden layer and ``output_activation`` the last one (classes or names from
    :data:`ACTIVATIONS`). ``layer_norm`` puts an ``nn.LayerNorm`` between each hidden layer and its activation.
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {list(sizes)}")
    hidden, last = _activation(activation), _activation(output_activation)
    layers: list[nn.Module] = []
    for j in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[j], sizes[j + 1]))
        if layer_norm and j < len(sizes) - 2:
            layers.append(nn.LayerNorm(sizes[j + 1]))
        layers.append(hidden() if j < len(sizes) - 2 else last())
    return nn.Sequential(*layers)


#: an env spec's observation encoder: ``encoder(observation_space, **options) -> nn.Module`` with an integer
#: ``out_features``, or its ``"module:attr"`` path
EncoderFactory = Callable[..., nn.Module] | str


# -- encoders ----------------------------------------------------------------------------------------------------------
def _flat_size(space: spaces.Space) -> int:
    """Features a flattened observation of ``space`` has (raises for spaces that cannot be flattened)."""
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape, dtype=np.int64))
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiBinary):
        return int(np.prod(space.shape, dtype=np.int64))
    if isinstance(space, spaces.Tuple):
        return sum(_flat_size(s) for s in space.spaces)
    if isinstance(space, spaces.Dict):
        return sum(_flat_size(s) for s in space.spaces.values())
    raise IncompatibleComponentsError(
        f"the default encoder cannot flatten observations of type {type(space).__name__}",
        hint="the environment plugin must supply an encoder for this observation space (EnvSpec(encoder=...))",
    )


class FlattenEncoder(nn.Module):
    """The default encoder: every part of the observation flattened to float32 and concatenated.

    Supports ``Box``, ``Discrete`` (one-hot), ``MultiBinary``, and ``Tuple`` / ``Dict`` spaces of those (nested).
    It has no parameters: the heads of the agent do all the learning.

    Args:
        observation_space: the environment's observation space (a gymnasium space).
    """

    def __init__(self, observation_space: spaces.Space) -> None:
        super().__init__()
        self.observation_space = observation_space
        self.out_features: int = _flat_size(observation_space)

    def forward(self, obs: Any) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        self._flatten(self.observation_space, obs, parts)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def _flatten(self, space: spaces.Space, obs: Any, out: list[torch.Tensor]) -> None:
        if isinstance(space, spaces.Tuple):
            for sub_space, sub_obs in zip(space.spaces, obs, strict=True):
                self._flatten(sub_space, sub_obs, out)
        elif isinstance(space, spaces.Dict):
            for key, sub_space in space.spaces.items():
                self._flatten(sub_space, obs[key], out)
        elif isinstance(space, spaces.Discrete):
            index = obs.reshape(obs.shape[0]).long() - int(space.start)
            out.append(nn.functional.one_hot(index, int(space.n)).float())
        else:
            out.append(obs.reshape(obs.shape[0], -1).float())


def make_encoder(encoder: EncoderFactory | None, observation_space: spaces.Space, **kwargs: Any) -> nn.Module:
    """Build the observation encoder an env spec supplies.

    Args:
        encoder: ``encoder(observation_space, **kwargs) -> nn.Module`` (or its ``"module:attr"`` path), or ``None``
            for :class:`FlattenEncoder`.
        observation_space: the environment's observation space.

    Raises:
        PluginError: the factory did not return a module with a positive integer ``out_features``.
    """
    if encoder is None:
        return FlattenEncoder(observation_space)
    factory: Callable[..., Any] = resolve(encoder, what="encoder")
    module = factory(observation_space, **kwargs)
    out_features = getattr(module, "out_features", None)
    if not isinstance(module, nn.Module) or not isinstance(out_features, int) or out_features <= 0:
        raise PluginError(
            f"encoder {encoder!r} returned {type(module).__name__} without a positive integer 'out_features'",
            hint="an encoder is a torch.nn.Module mapping a batch of observations to (batch, out_features)",
        )
    return module


# -- ensembles -----------------------------------------------------------------------------------------------------
class EnsembleLinear(nn.Module):
    """``n`` independent ``nn.Linear(in_features, out_features)`` layers with stacked weights.

    ``weight[i]`` is the transpose of member ``i``'s ``nn.Linear.weight`` (shape ``(n, in, out)``) so that the whole
    ensemble is one ``baddbmm``; each member is initialised the way ``nn.Linear`` initialises itself.

    Input: ``(n, batch, in)`` (one input per member) or ``(batch, in)`` (the same input for every member, computed
    as a single wide matrix product). Output: ``(n, batch, out)``.
    """

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.n, self.in_features, self.out_features = n, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default (kaiming_uniform with a=sqrt(5)) amounts to U(-1/sqrt(in), 1/sqrt(in)) for both.
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(
        self, x: torch.Tensor, members: torch.Tensor | None = None, detach_params: bool = False
    ) -> torch.Tensor:
        """Apply the layer; ``members`` selects a subset of the ensemble (index tensor), ``detach_params`` keeps
        gradients from reaching the weights (while still flowing to ``x``)."""
        weight, bias = self.weight, self.bias
        if members is not None:
            weight, bias = weight[members], bias[members]
        if detach_params:
            weight, bias = weight.detach(), bias.detach()
        if x.dim() == 2:
            # shared input: one (batch, in) @ (in, k*out) product instead of k small ones
            k = weight.shape[0]
            wide = weight.permute(1, 0, 2).reshape(self.in_features, k * self.out_features)
            y = (x @ wide).view(x.shape[0], k, self.out_features).transpose(0, 1)
            return y + bias
        return torch.baddbmm(bias, x, weight)

    def extra_repr(self) -> str:
        return f"n={self.n}, in_features={self.in_features}, out_features={self.out_features}"


class EnsembleLayerNorm(nn.Module):
    """``n`` independent ``nn.LayerNorm(features)`` with stacked affine parameters, for ``(k, batch, features)``
    inputs (``k`` the members run: all ``n`` or those ``members`` indexes)."""

    def __init__(self, n: int, features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.n, self.features, self.eps = n, features, eps
        self.weight = nn.Parameter(torch.ones(n, 1, features))
        self.bias = nn.Parameter(torch.zeros(n, 1, features))

    def forward(
        self, x: torch.Tensor, members: torch.Tensor | None = None, detach_params: bool = False
    ) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if members is not None:
            weight, bias = weight[members], bias[members]
        if detach_params:
            weight, bias = weight.detach(), bias.detach()
        return torch.addcmul(bias, nn.functional.layer_norm(x, (self.features,), eps=self.eps), weight)

    def extra_repr(self) -> str:
        return f"n={self.n}, features={self.features}, eps={self.eps}"


class EnsembleMLP(nn.Module):
    """``n`` independent MLPs of the same shape (see :func:`mlp`) evaluated as one batched computation.

    Input: ``(batch, sizes[0])`` shared by all members, or ``(n, batch, sizes[0])``. Output: ``(n, batch, sizes[-1])``.
    ``layer_norm`` normalises each hidden layer before its activation, as :func:`mlp` does.
    """

    def __init__(
        self,
        n: int,
        sizes: Sequence[int],
        activation: str | type[nn.Module] = nn.ReLU,
        output_activation: str | type[nn.Module] = nn.Identity,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least an input and an output size, got {list(sizes)}")
        self.n, self.sizes, self.layer_norm = n, list(sizes), layer_norm
        #: The activation classes, so that a member can be rebuilt as a separate :func:`mlp`.
        self.activation_cls, self.output_activation_cls = _activation(activation), _activation(output_activation)
        self.layers = nn.ModuleList(EnsembleLinear(n, sizes[j], sizes[j + 1]) for j in range(len(sizes) - 1))
        self.norms = nn.ModuleList(EnsembleLayerNorm(n, size) for size in sizes[1:-1]) if layer_norm else None
        self.activation = self.activation_cls()
        self.output_activation = self.output_activation_cls()

    def forward(
        self, x: torch.Tensor, members: torch.Tensor | None = None, detach_params: bool = False
    ) -> torch.Tensor:
        """Run the members (all, or those ``members`` indexes); see :meth:`EnsembleLinear.forward`."""
        last = len(self.layers) - 1
        for j, layer in enumerate(self.layers):
            x = layer(x, members=members, detach_params=detach_params)
            if j < last:
                if self.norms is not None:
                    x = self.norms[j](x, members=members, detach_params=detach_params)
                x = self.activation(x)
            else:
                x = self.output_activation(x)
        return x


class VmapEnsemble(nn.Module):
    """``n`` copies of one module architecture with independent weights, run as one ``torch.func.vmap`` call.

    Built from ``n`` modules of identical structure (for instance ``n`` freshly initialised CNN encoders); their
    parameters are stacked (leading dimension ``n``) and registered here, so ``state_dict``, optimisers and ``.to``
    work as for any module. The inputs are shared by all members; the output gets a leading ``n`` dimension.
    Modules that update buffers in ``forward`` (batch norm in training mode) cannot be vmapped, and tensors a module
    keeps outside its parameters and buffers are not supported (the structure is called on the meta device).
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        if not modules:
            raise ValueError("VmapEnsemble needs at least one module")
        self.n = len(modules)
        self.out_features = getattr(modules[0], "out_features", None)
        params, buffers = torch.func.stack_module_state(list(modules))
        self._param_names = list(params)
        self._buffer_names = list(buffers)
        for name, value in params.items():
            self.register_parameter(self._key(name), nn.Parameter(value))
        for name, value in buffers.items():
            self.register_buffer(self._key(name), value)
        # the structure to call; its own tensors are never used (kept on the meta device, out of the state dict)
        self._base = [copy.deepcopy(modules[0]).to("meta")]

    @staticmethod
    def _key(name: str) -> str:
        return "stacked__" + name.replace(".", "__")

    def forward(self, *inputs: Any) -> Any:
        params = {name: getattr(self, self._key(name)) for name in self._param_names}
        buffers = {name: getattr(self, self._key(name)) for name in self._buffer_names}
        base = self._base[0]

        def call(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *args: Any) -> Any:
            return torch.func.functional_call(base, (p, b), args)

        in_dims = (0, 0, *([None] * len(inputs)))
        return torch.func.vmap(call, in_dims=in_dims, randomness="different")(params, buffers, *inputs)


@torch.no_grad()
def polyak_update(params: Iterable[torch.Tensor], target_params: Iterable[torch.Tensor], polyak: float) -> None:
    """``target <- polyak * target + (1 - polyak) * param`` for every pair, in one fused (foreach) pass."""
    params, target_params = list(params), list(target_params)
    if params:
        torch._foreach_lerp_(target_params, params, 1.0 - polyak)
