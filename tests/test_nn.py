"""tmrl_core.nn: the default encoder, encoder factories, and the batched ensembles agents build on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from tmrl_core.errors import IncompatibleComponentsError, PluginError
from tmrl_core.nn import (
    EnsembleLinear,
    EnsembleMLP,
    FlattenEncoder,
    VmapEnsemble,
    make_encoder,
    mlp,
    polyak_update,
)
from tmrl_core.testing import ensemble_member, load_ensemble_members

B = 7


def test_mlp_layers_and_activations() -> None:
    net = mlp([3, 8, 5, 2], "tanh", nn.Sigmoid)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear, nn.Sigmoid]
    out = net(torch.randn(B, 3))
    assert out.shape == (B, 2) and bool(((out > 0) & (out < 1)).all())
    with pytest.raises(ValueError, match="activation"):
        mlp([3, 2], "no-such-activation")


def test_flatten_encoder_box_tuple_dict_discrete() -> None:
    space = spaces.Tuple(
        (
            spaces.Box(-1, 1, shape=(2,)),
            spaces.Box(0, 255, shape=(3, 4), dtype=np.uint8),
            spaces.Dict({"speed": spaces.Box(0, 1, shape=(1,)), "gear": spaces.Discrete(4)}),
        )
    )
    encoder = FlattenEncoder(space)
    assert encoder.out_features == 2 + 12 + 1 + 4
    obs = (
        torch.randn(B, 2),
        torch.randint(0, 255, (B, 3, 4), dtype=torch.uint8),
        {"speed": torch.rand(B, 1), "gear": torch.randint(0, 4, (B,))},
    )
    out = encoder(obs)
    assert out.shape == (B, encoder.out_features) and out.dtype == torch.float32
    assert torch.equal(out[:, :2], obs[0])
    assert torch.equal(out[:, 2:14], obs[1].reshape(B, 12).float())
    # gymnasium's Dict orders its keys: gear (one-hot) then speed
    assert torch.equal(out[:, 14:18].argmax(1), obs[2]["gear"])
    assert torch.equal(out[:, 14:18].sum(1), torch.ones(B))
    assert torch.equal(out[:, 18], obs[2]["speed"][:, 0])

    box = FlattenEncoder(spaces.Box(-1, 1, shape=(2, 3)))
    assert box(torch.ones(B, 2, 3)).shape == (B, 6)


def test_flatten_encoder_rejects_what_it_cannot_flatten() -> None:
    with pytest.raises(IncompatibleComponentsError) as info:
        FlattenEncoder(spaces.Text(5))
    assert info.value.hint and "encoder" in info.value.hint


class SmallEncoder(nn.Module):
    """An encoder with parameters (what an env plugin supplies)."""

    def __init__(self, observation_space: spaces.Space, features: int = 5) -> None:
        super().__init__()
        self.flat = FlattenEncoder(observation_space)
        self.net = nn.Sequential(nn.Linear(self.flat.out_features, features), nn.Tanh())
        self.out_features = features

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.flat(obs))


def test_make_encoder_default_factory_and_path() -> None:
    space = spaces.Box(-1, 1, shape=(4,))
    assert isinstance(make_encoder(None, space), FlattenEncoder)
    built = make_encoder(SmallEncoder, space, features=3)
    assert isinstance(built, SmallEncoder) and built.out_features == 3
    by_path = make_encoder("tmrl_core.nn:FlattenEncoder", space)
    assert by_path.out_features == 4
    with pytest.raises(PluginError, match="out_features"):
        make_encoder(lambda space: nn.Identity(), space)


def _separate_mlps_with_random_norms(n: int, sizes: list[int], layer_norm: bool) -> list[nn.Sequential]:
    members = [mlp(sizes, nn.ReLU, layer_norm=layer_norm) for _ in range(n)]
    with torch.no_grad():  # LayerNorm starts as the identity affine map: give each member its own, to be compared
        for member in members:
            for norm in (m for m in member if isinstance(m, nn.LayerNorm)):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)
    return members


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("shared_input", [True, False])
def test_ensemble_mlp_matches_separate_mlps_values_and_gradients(shared_input: bool, layer_norm: bool) -> None:
    torch.manual_seed(0)
    n, sizes = 4, [6, 16, 16, 1]
    members = _separate_mlps_with_random_norms(n, sizes, layer_norm)
    ensemble = EnsembleMLP(n, sizes, nn.ReLU, layer_norm=layer_norm)
    load_ensemble_members(ensemble, members)
    x = torch.randn(B, 6) if shared_input else torch.randn(n, B, 6)
    x_ens, x_sep = x.clone().requires_grad_(True), x.clone().requires_grad_(True)

    out = ensemble(x_ens)
    expected = torch.stack([m(x_sep if shared_input else x_sep[i]) for i, m in enumerate(members)])
    assert out.shape == (n, B, 1)
    torch.testing.assert_close(out, expected)

    weights = torch.randn(n, B, 1)  # a loss that weighs every member differently
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x_ens.grad, x_sep.grad)
    for i, member in enumerate(members):
        linears = [m for m in member if isinstance(m, nn.Linear)]
        for layer, linear in zip(ensemble.layers, linears, strict=True):
            torch.testing.assert_close(layer.weight.grad[i], linear.weight.grad.T)
            torch.testing.assert_close(layer.bias.grad[i, 0], linear.bias.grad)
        norms = [m for m in member if isinstance(m, nn.LayerNorm)]
        assert len(norms) == (len(sizes) - 2 if layer_norm else 0)
        for ensemble_norm, norm in zip(ensemble.norms or [], norms, strict=True):
            torch.testing.assert_close(ensemble_norm.weight.grad[i, 0], norm.weight.grad)
            torch.testing.assert_close(ensemble_norm.bias.grad[i, 0], norm.bias.grad)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_ensemble_members_subset_and_detached_params(layer_norm: bool) -> None:
    torch.manual_seed(1)
    n, sizes = 5, [3, 8, 2]
    ensemble = EnsembleMLP(n, sizes, layer_norm=layer_norm)
    load_ensemble_members(ensemble, _separate_mlps_with_random_norms(n, sizes, layer_norm))
    x = torch.randn(B, 3, requires_grad=True)
    subset = torch.tensor([3, 1])
    out = ensemble(x, members=subset, detach_params=True)
    for row, i in enumerate(subset.tolist()):
        torch.testing.assert_close(out[row], ensemble_member(ensemble, i)(x))
    assert not torch.allclose(out[0], out[1])
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in ensemble.parameters())


def test_ensemble_linear_initialised_like_linear() -> None:
    torch.manual_seed(2)
    layer = EnsembleLinear(8, 100, 30)
    bound = 1 / 10
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    # members are independent draws
    assert not torch.equal(layer.weight[0], layer.weight[1])
    assert layer.weight.detach().std().item() == pytest.approx(bound / 3**0.5, rel=0.05)


def test_member_round_trip() -> None:
    ensemble = EnsembleMLP(3, [2, 4, 1], "tanh")
    copy = EnsembleMLP(3, [2, 4, 1], "tanh")
    load_ensemble_members(copy, [ensemble_member(ensemble, i) for i in range(3)])
    for a, b in zip(ensemble.parameters(), copy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_vmap_ensemble_matches_separate_modules() -> None:
    torch.manual_seed(3)
    space = spaces.Box(-1, 1, shape=(4,))
    modules = [SmallEncoder(space) for _ in range(3)]
    ensemble = VmapEnsemble(modules)
    assert ensemble.out_features == 5
    assert len(list(ensemble.parameters())) == len(list(modules[0].parameters()))
    x = torch.randn(B, 4)
    out = ensemble(x)
    expected = torch.stack([m(x) for m in modules])
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    stacked_grad = ensemble.get_parameter("stacked__net__0__weight").grad
    for i, m in enumerate(modules):
        torch.testing.assert_close(stacked_grad[i], m.net[0].weight.grad)
    # the state dict holds the stacked tensors only
    assert all(k.startswith("stacked__") for k in ensemble.state_dict())


def test_polyak_update() -> None:
    online = [torch.ones(3), torch.full((2, 2), 2.0)]
    target = [torch.zeros(3), torch.zeros(2, 2)]
    polyak_update(online, target, polyak=0.75)
    torch.testing.assert_close(target[0], torch.full((3,), 0.25))
    torch.testing.assert_close(target[1], torch.full((2, 2), 0.5))
