"""SAC's hyperparameters (settings section ``sac``), in a module of their own without torch: ``tmrl run`` validates
the settings before it starts the workers, and importing torch there would delay every worker's first step by one
torch import."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Beta", "OptimizerName", "SacSettings"]

OptimizerName = Literal["adam", "adamw", "sgd"]
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class SacSettings(BaseModel):
    """Hyperparameters of SAC, with the paper's names. Defaults learn Pendulum-like tasks quickly."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    gamma: float = Field(0.99, ge=0.0, le=1.0, description="Discount factor gamma (GAMMA).")
    polyak: float = Field(
        0.995,
        ge=0.0,
        le=1.0,
        description="Target averaging: target <- polyak*target + (1-polyak)*online; 1 - tau in the paper (POLYAK).",
    )
    alpha: float = Field(
        0.2, gt=0.0, description="Entropy coefficient alpha: fixed (SAC v1) or initial (SAC v2) (ALPHA)."
    )
    learn_entropy_coef: bool = Field(
        True, description="Learn alpha towards the target entropy, SAC v2 (LEARN_ENTROPY_COEF)."
    )
    target_entropy: float | None = Field(
        None, description="Target entropy for learned alpha; None: -|A| (TARGET_ENTROPY)."
    )
    lr_actor: float = Field(1e-3, gt=0.0, description="Learning rate of the actor, the policy (LR_ACTOR).")
    lr_critic: float = Field(1e-3, gt=0.0, description="Learning rate of the critics (LR_CRITIC).")
    lr_entropy: float = Field(1e-3, gt=0.0, description="Learning rate of log(alpha), SAC v2 (LR_ENTROPY).")
    optimizer_actor: OptimizerName = Field("adam", description="Actor optimiser: adam, adamw or sgd (OPTIMIZER_ACTOR).")
    optimizer_critic: OptimizerName = Field(
        "adam", description="Critic optimiser: adam, adamw or sgd (OPTIMIZER_CRITIC)."
    )
    betas_actor: tuple[Beta, Beta] = Field(
        (0.9, 0.999), description="Adam/AdamW betas of the actor optimiser (BETAS_ACTOR)."
    )
    betas_critic: tuple[Beta, Beta] = Field(
        (0.9, 0.999), description="Adam/AdamW betas of the critic optimiser (BETAS_CRITIC)."
    )
    l2_actor: float = Field(
        0.0, ge=0.0, description="Actor weight decay: L2 for adam and sgd, decoupled for adamw (L2_ACTOR)."
    )
    l2_critic: float = Field(
        0.0, ge=0.0, description="Critic weight decay: L2 for adam and sgd, decoupled for adamw (L2_CRITIC)."
    )
    hidden_sizes: tuple[int, ...] = Field((256, 256), min_length=1, description="Hidden layer sizes of every MLP.")
    activation: Literal["relu", "tanh", "elu", "gelu", "silu", "leaky_relu"] = Field(
        "relu", description="Activation of the hidden layers."
    )
    critic_layer_norm: bool = Field(
        False,
        description=(
            "Layer normalisation before each hidden activation of the critics' heads: keeps Q-values from diverging"
            " at high update-to-data ratios (REDQ's G), at a small cost per update."
        ),
    )
    critic_encoder: Literal["shared", "per_critic"] = Field(
        "shared",
        description="Critics share one observation encoder ('shared') or each has its own, vmapped ('per_critic').",
    )
