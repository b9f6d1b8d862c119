"""Tracks of the simulated game: a centre line built from straights and arcs, a constant width, and a raster.

Coordinates follow TrackMania: the ground is the ``(x, z)`` plane and ``y`` points up. A heading ``theta`` means the
direction ``(cos theta, sin theta)`` in ``(x, z)``; seen from above with ``z`` pointing up the screen, turning right
is clockwise (``theta`` decreases).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

#: Spacing of the centre-line samples, in metres.
CENTRE_STEP = 0.25

#: (length in m, turn in degrees, positive to the left) for each piece of the layouts.
LAYOUTS: dict[str, tuple[tuple[float, float], ...]] = {
    # An open track like a short TrackMania map: start straight, turns both ways, an S, and the finish.
    "default": (
        (60.0, 0.0),
        (47.0, -90.0),
        (40.0, 0.0),
        (52.0, 120.0),
        (30.0, 0.0),
        (42.0, -60.0),
        (27.0, 45.0),
        (27.0, -45.0),
        (50.0, 0.0),
    ),
    # A closed loop (two straights and two half circles); the finish line is the start line after one lap.
    "oval": (
        (80.0, 0.0),
        (94.25, 180.0),
        (80.0, 0.0),
        (94.25, 180.0),
    ),
    # The harder one: 254 m of hairpins and a chicane, turn radii 8 to 10 m on a 12 m road, so that a car taking
    # them at the default track's speeds hits the wall; an agent tuned to the default track does not drive it.
    "tight": (
        (40.0, 0.0),
        (16.0, -90.0),
        (20.0, 0.0),
        (22.0, 150.0),
        (14.0, 0.0),
        (14.0, -100.0),
        (12.0, 70.0),
        (24.0, 0.0),
        (20.0, -140.0),
        (18.0, 0.0),
        (12.0, 80.0),
        (12.0, -80.0),
        (30.0, 0.0),
    ),
}
#: road width of each layout in metres (walls on both sides)
LAYOUT_WIDTHS: dict[str, float] = {"default": 16.0, "oval": 16.0, "tight": 12.0}

ROAD_GREY = (96, 96, 104)  # BGR; every channel above the LIDAR's black threshold
MARKING = (210, 210, 210)
START_LINE = (40, 160, 40)
FINISH_LINE = (40, 40, 200)


@dataclass(frozen=True, eq=False)
class Track:
    """A track: the centre line (``(N, 2)`` points in ``(x, z)``), headings, arc length, and road width.

    Attributes:
        name: the layout name.
        centre: ``(N, 2)`` float64 points, :data:`CENTRE_STEP` metres apart.
        heading: ``(N,)`` heading of the centre line at each point, in radians.
        s: ``(N,)`` arc length from the start line, in metres.
        width: road width in metres (walls on both sides).
        height: the ``y`` coordinate of the road.
    """

    name: str
    centre: np.ndarray
    heading: np.ndarray
    s: np.ndarray
    width: float = 16.0
    height: float = 9.5

    @property
    def length(self) -> float:
        return float(self.s[-1])

    @property
    def closed(self) -> bool:
        return bool(np.linalg.norm(self.centre[-1] - self.centre[0]) < 1.0)

    def positions3d(self) -> np.ndarray:
        """The centre line as ``(N, 3)`` float32 game positions ``(x, y, z)``."""
        out = np.empty((len(self.centre), 3), dtype=np.float32)
        out[:, 0] = self.centre[:, 0]
        out[:, 1] = self.height
        out[:, 2] = self.centre[:, 1]
        return out

    def nearest(self, point: np.ndarray, hint: int | None = None, window: int = 160) -> tuple[int, float]:
        """Index of the centre-line point nearest to ``point`` (``(x, z)``) and the signed lateral offset in m
        (positive to the left). ``hint`` restricts the search to ``window`` points around it (vectorised)."""
        if hint is None:
            lo, hi = 0, len(self.centre)
        else:
            lo, hi = max(0, hint - window), min(len(self.centre), hint + window + 1)
        delta = self.centre[lo:hi] - point
        d2 = np.einsum("ij,ij->i", delta, delta)
        k = int(np.argmin(d2))
        idx = lo + k
        if hint is not None and (k == 0 and lo > 0 or k == hi - lo - 1 and hi < len(self.centre)):
            return self.nearest(point, None)  # the car left the window (respawn, long jump): search everything
        theta = self.heading[idx]
        off = point - self.centre[idx]
        lateral = -math.sin(theta) * off[0] + math.cos(theta) * off[1]
        return idx, float(lateral)

    def curvature_ahead(self, idx: int, distance: float) -> float:
        """The largest absolute curvature (1/m) over the next ``distance`` metres."""
        n = max(2, int(distance / CENTRE_STEP))
        j = min(len(self.heading), idx + n)
        if j - idx < 2:
            return 0.0
        turn = np.abs(np.diff(np.unwrap(self.heading[idx:j])))
        return float(turn.max() / CENTRE_STEP)


@functools.lru_cache(maxsize=8)
def build_track(name: str = "default", width: float | None = None) -> Track:
    """Integrate the layout's pieces (straights and constant-curvature arcs) into a centre line (``width``: the
    layout's own by default)."""
    try:
        pieces = LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown simulated track {name!r}; known: {', '.join(LAYOUTS)}") from None
    width = LAYOUT_WIDTHS.get(name, 16.0) if width is None else width
    curv = []
    for length, turn_deg in pieces:
        n = max(1, int(round(length / CENTRE_STEP)))
        curv.append(np.full(n, math.radians(turn_deg) / (n * CENTRE_STEP)))
    kappa = np.concatenate(curv)
    heading = np.concatenate([[0.0], np.cumsum(kappa * CENTRE_STEP)])
    # midpoint rule: each step moves along the mean heading of its two ends
    mid = 0.5 * (heading[:-1] + heading[1:])
    steps = CENTRE_STEP * np.stack([np.cos(mid), np.sin(mid)], axis=1)
    centre = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    s = np.arange(len(centre), dtype=np.float64) * CENTRE_STEP
    return Track(name=name, centre=centre, heading=heading, s=s, width=width)


@dataclass(frozen=True)
class TrackRaster:
    """The track drawn from above into a BGR image: road grey, walls and everything off the road black.

    ``pixel = (x - x0, z1 - z) * pixels_per_m`` (rows grow downwards, ``z`` grows up).
    """

    image: np.ndarray
    x0: float
    z1: float
    pixels_per_m: float


@functools.lru_cache(maxsize=4)
def rasterize(track: Track, pixels_per_m: float = 8.0, margin: float = 60.0) -> TrackRaster:
    """Draw ``track`` once; views are then cut out of it by an affine warp."""
    import cv2

    lo = track.centre.min(axis=0) - margin
    hi = track.centre.max(axis=0) + margin
    w = int(math.ceil((hi[0] - lo[0]) * pixels_per_m))
    h = int(math.ceil((hi[1] - lo[1]) * pixels_per_m))
    x0, z1 = float(lo[0]), float(hi[1])

    def px(points: np.ndarray) -> np.ndarray:
        return np.stack([(points[:, 0] - x0) * pixels_per_m, (z1 - points[:, 1]) * pixels_per_m], axis=1)

    # distance of every pixel to the centre line, so the road edge is exact on curves
    line = np.full((h, w), 255, dtype=np.uint8)
    pts = np.round(px(track.centre)).astype(np.int32)
    cv2.polylines(line, [pts], isClosed=False, color=0, thickness=1)
    dist = cv2.distanceTransform(line, cv2.DIST_L2, 5) / pixels_per_m
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[dist <= track.width / 2] = ROAD_GREY

    # dashed centre marking: 3 m painted every 8 m, so motion shows in the frames
    half = 0.15 * pixels_per_m
    for start in np.arange(4.0, track.length - 4.0, 8.0):
        seg = track.centre[int(start / CENTRE_STEP) : int((start + 3.0) / CENTRE_STEP) + 1]
        if len(seg) > 1:
            cv2.polylines(image, [np.round(px(seg)).astype(np.int32)], False, MARKING, max(1, int(2 * half)))

    def cross_line(idx: int, colour: tuple[int, int, int]) -> None:
        theta = track.heading[idx]
        normal = np.array([-math.sin(theta), math.cos(theta)])
        ends = np.stack([track.centre[idx] + normal * track.width / 2, track.centre[idx] - normal * track.width / 2])
        a, b = np.round(px(ends)).astype(np.int32)
        cv2.line(image, tuple(int(v) for v in a), tuple(int(v) for v in b), colour, max(1, int(pixels_per_m)))

    cross_line(int(2.0 / CENTRE_STEP), START_LINE)
    if not track.closed:
        cross_line(len(track.centre) - 1, FINISH_LINE)
    return TrackRaster(image=image, x0=x0, z1=z1, pixels_per_m=pixels_per_m)
