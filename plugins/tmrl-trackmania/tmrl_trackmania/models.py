"""Observation encoders for the TrackMania environments, usable by any agent (``sac``, ``redqsac``).

An encoder is ``Encoder(observation_space) -> torch.nn.Module`` mapping a batch of observations (a tuple of tensors
in the order of the ``Tuple`` space, batch dimension first) to ``(batch, out_features)`` float features.

- :class:`ImageHistoryEncoder` (``trackmania-full``): a CNN over the stacked screenshots (uint8), next to the
  scalars and the action buffer.
- :class:`LidarHistoryEncoder` (``trackmania-lidar``, ``trackmania-lidar-progress``): an MLP over the LIDAR history,
  the scalars and the action buffer.

Inputs are rescaled to about [-1, 1] from the bounds of their ``Box`` (images from [0, 255]), so raw km/h, rpm and
pixel lengths need no hand-made constants.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn


def _is_image_history(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) >= 3


def _boxes(observation_space: spaces.Space) -> list[spaces.Box]:
    parts = observation_space.spaces if isinstance(observation_space, spaces.Tuple) else (observation_space,)
    for part in parts:
        if not isinstance(part, spaces.Box):
            raise TypeError(f"TrackMania encoders read Box components, got {part}")
    return list(parts)


class BoxScaler(nn.Module):
    """Flattens Box components and rescales them to [-1, 1] where their bounds are finite (unchanged elsewhere)."""

    def __init__(self, boxes: list[spaces.Box]) -> None:
        super().__init__()
        lows, highs = [], []
        for box in boxes:
            lo = np.asarray(box.low, dtype=np.float64).reshape(-1)
            hi = np.asarray(box.high, dtype=np.float64).reshape(-1)
            finite = np.isfinite(lo) & np.isfinite(hi) & (hi > lo)
            lows.append(np.where(finite, lo, -1.0))
            highs.append(np.where(finite, hi, 1.0))
        low = np.concatenate(lows) if lows else np.zeros(0)
        high = np.concatenate(highs) if highs else np.zeros(0)
        self.register_buffer("center", torch.as_tensor((high + low) / 2, dtype=torch.float32))
        self.register_buffer("half_range", torch.as_tensor((high - low) / 2, dtype=torch.float32))
        self.out_features = int(low.size)

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        flat = torch.cat([p.reshape(p.shape[0], -1).float() for p in parts], dim=1)
        return (flat - self.center) / self.half_range


class ImageHistoryEncoder(nn.Module):
    """CNN over the image history (``(K, H, W)`` or ``(K, H, W, 3)`` uint8), concatenated with the other
    components, then one hidden layer.

    Args:
        observation_space: a ``Tuple`` with exactly one image-history Box.
        features: ``out_features`` of the encoder.
    """

    def __init__(self, observation_space: spaces.Space, features: int = 256, **_: Any) -> None:
        super().__init__()
        boxes = _boxes(observation_space)
        images = [i for i, b in enumerate(boxes) if _is_image_history(b)]
        if len(images) != 1:
            raise ValueError(
                f"ImageHistoryEncoder needs one uint8 image history in the observation, found {len(images)}"
            )
        self.image_index = images[0]
        shape = boxes[self.image_index].shape
        self.channels = shape[0] * (shape[3] if len(shape) == 4 else 1)
        self.rgb = len(shape) == 4
        self.others = [i for i in range(len(boxes)) if i != self.image_index]
        self.scaler = BoxScaler([boxes[i] for i in self.others])
        # padded convolutions: any image size works (64x64 -> 8x8 feature maps, 16x16 -> 2x2)
        self.cnn = nn.Sequential(
            nn.Conv2d(self.channels, 32, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 32, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            cnn_out = self.cnn(torch.zeros(1, self.channels, shape[1], shape[2])).shape[1]
        self.head = nn.Sequential(nn.Linear(cnn_out + self.scaler.out_features, features), nn.ReLU())
        self.out_features = features

    def forward(self, obs: Any) -> torch.Tensor:
        parts = list(obs) if isinstance(obs, (tuple, list)) else [obs]
        img = parts[self.image_index]
        if self.rgb:  # (B, K, H, W, 3) -> (B, K * 3, H, W)
            img = img.permute(0, 1, 4, 2, 3)
        img = img.reshape(img.shape[0], self.channels, img.shape[-2], img.shape[-1]).float() / 255.0
        x = self.cnn(img)
        if self.others:
            x = torch.cat([x, self.scaler([parts[i] for i in self.others])], dim=1)
        return self.head(x)


class LidarHistoryEncoder(nn.Module):
    """MLP over all components flattened (LIDAR history, speed, progress, action buffer).

    Args:
        observation_space: a ``Tuple`` of Boxes.
        hidden: sizes of the hidden layers; ``out_features`` is the last one.
    """

    def __init__(self, observation_space: spaces.Space, hidden: tuple[int, ...] = (256, 256), **_: Any) -> None:
        super().__init__()
        self.scaler = BoxScaler(_boxes(observation_space))
        layers: list[nn.Module] = []
        width = self.scaler.out_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.mlp = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, obs: Any) -> torch.Tensor:
        parts = list(obs) if isinstance(obs, (tuple, list)) else [obs]
        return self.mlp(self.scaler(parts))
