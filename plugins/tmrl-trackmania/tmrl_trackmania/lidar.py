"""A 19-beam LIDAR computed from a screenshot: how far the road goes in each direction before a black border.

The beams start at one point of the frame (the bottom centre by default, where the car is) and fan out every 10
degrees from straight left (-90) through straight ahead (0) to straight right (+90). A beam stops at the first pixel
whose colour channels are all below a threshold (the track borders are black), or at the edge of the frame. The
reading is the length of each beam, in pixels of the frame it was computed on.

Vectorised: the pixels every beam crosses are computed once per frame size; a reading is one gather of those pixels,
one comparison and one ``argmax`` for all beams together, with no Python loop over beams or pixels.
"""

from __future__ import annotations

import math

import numpy as np

NB_BEAMS = 19
BEAM_ANGLES_DEG: tuple[float, ...] = tuple(-90.0 + 10.0 * i for i in range(NB_BEAMS))


class Lidar:
    """Reads beam lengths from ``(H, W)`` grayscale or ``(H, W, C)`` colour frames of one fixed size.

    Args:
        width, height: the frame size the LIDAR reads.
        origin: ``(x, y)`` pixel where the beams start (default: bottom centre).
        black_threshold: a pixel stops a beam when all its (first three) channels are below this value.
        angles_deg: beam directions in degrees, 0 straight up the frame, positive to the right.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        origin: tuple[float, float] | None = None,
        black_threshold: int = 55,
        angles_deg: tuple[float, ...] = BEAM_ANGLES_DEG,
    ) -> None:
        self.width = width
        self.height = height
        self.origin = origin if origin is not None else ((width - 1) / 2.0, float(height - 1))
        self.black_threshold = black_threshold
        self.angles_deg = angles_deg
        ox, oy = self.origin
        # the longest beam possible in this frame, one sample per pixel of length
        self.max_length = int(math.ceil(math.hypot(width, height))) + 1
        t = np.arange(self.max_length, dtype=np.float64)
        rad = np.radians(np.asarray(angles_deg, dtype=np.float64))[:, None]
        xs = np.rint(ox + t * np.sin(rad)).astype(np.int64)
        ys = np.rint(oy - t * np.cos(rad)).astype(np.int64)
        inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
        # after a beam leaves the frame it stays out (the frame is convex): its length there is where it left
        self._inside = np.minimum.accumulate(inside, axis=1)
        self._flat = np.where(self._inside, ys * width + xs, 0)
        #: beam lengths when nothing stops them: up to the frame edge
        self.edge_lengths = self._inside.sum(axis=1).astype(np.float32)
        # per channel count: indices into the flattened frame of the colour channels every beam crosses, channel
        # first. A 1-D gather is ten times faster than indexing the pixel axis of an (H * W, C) array, and reducing
        # over a leading axis of 3 is a hundred times faster than over a trailing one.
        self._gathers: dict[int, np.ndarray] = {}

    def _gather_index(self, channels: int) -> np.ndarray:
        index = self._gathers.get(channels)
        if index is None:
            if channels:
                used = np.arange(min(channels, 3))[:, None, None]
                index = self._flat[None] * channels + used
            else:
                index = self._flat
            self._gathers[channels] = index
        return index

    @property
    def nb_beams(self) -> int:
        return len(self.angles_deg)

    def read(self, frame: np.ndarray) -> np.ndarray:
        """Beam lengths in pixels, ``(nb_beams,)`` float32, for one frame."""
        if frame.shape[0] != self.height or frame.shape[1] != self.width:
            raise ValueError(
                f"this Lidar reads {self.width}x{self.height} frames, got {frame.shape[1]}x{frame.shape[0]}"
            )
        pixels = np.ascontiguousarray(frame).reshape(-1)[self._gather_index(frame.shape[2] if frame.ndim == 3 else 0)]
        if frame.ndim == 3:
            pixels = pixels.max(axis=0)  # all channels below the threshold <=> the brightest one is
        dark = pixels < self.black_threshold
        stop = dark | ~self._inside
        # every row has a stop (the padding past the frame edge), so argmax finds the first one
        return stop.argmax(axis=1).astype(np.float32)

    def end_points(self, lengths: np.ndarray) -> np.ndarray:
        """``(nb_beams, 2)`` integer pixel ``(x, y)`` where each beam of a reading ends (for drawing)."""
        rad = np.radians(np.asarray(self.angles_deg))
        ox, oy = self.origin
        xs = np.rint(ox + lengths * np.sin(rad))
        ys = np.rint(oy - lengths * np.cos(rad))
        return np.stack([xs, ys], axis=1).astype(np.int64)


def read_lidar_loop(frame: np.ndarray, lidar: Lidar) -> np.ndarray:
    """The straightforward per-beam, per-pixel walk (reference for tests and the benchmark)."""
    out = np.empty(lidar.nb_beams, dtype=np.float32)
    ox, oy = lidar.origin
    for b, angle in enumerate(lidar.angles_deg):
        s, c = math.sin(math.radians(angle)), math.cos(math.radians(angle))
        t = 0
        while True:
            x, y = int(round(ox + t * s)), int(round(oy - t * c))
            if not (0 <= x < lidar.width and 0 <= y < lidar.height):
                break
            px = frame[y, x]
            value = px if frame.ndim == 2 else max(px[:3])
            if value < lidar.black_threshold:
                break
            t += 1
        out[b] = t
    return out
