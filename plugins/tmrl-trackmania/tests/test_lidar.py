"""The vectorised LIDAR on synthetic frames whose distances are known."""

from __future__ import annotations

import numpy as np
import pytest
from tmrl_trackmania.lidar import BEAM_ANGLES_DEG, NB_BEAMS, Lidar, read_lidar_loop


def test_nineteen_beams_from_left_to_right():
    assert NB_BEAMS == 19
    assert BEAM_ANGLES_DEG[0] == -90 and BEAM_ANGLES_DEG[9] == 0 and BEAM_ANGLES_DEG[-1] == 90


def test_distances_to_black_walls_are_exact():
    w, h = 201, 101
    frame = np.full((h, w, 4), 120, dtype=np.uint8)  # grey road, BGRA
    origin = (100.0, 100.0)
    frame[100 - 40, :, :3] = 0  # a black wall 40 px ahead
    frame[:, 100 - 25, :3] = 10  # 25 px to the left
    frame[:, 100 + 60, :3] = 30  # 60 px to the right
    lidar = Lidar(w, h, origin=origin)
    d = lidar.read(frame)
    assert d.shape == (19,) and d.dtype == np.float32
    assert d[0] == 25  # straight left
    assert d[9] == 40  # straight ahead
    assert d[18] == 60  # straight right
    # 30 degrees right of ahead: the wall 40 px ahead is 40 / cos(30 deg) away along the beam
    assert abs(d[12] - 40 / np.cos(np.radians(30))) <= 1.0
    # 60 degrees left: the left wall, 25 / sin(60 deg)
    assert abs(d[3] - 25 / np.sin(np.radians(60))) <= 1.0


def test_beams_stop_at_the_frame_edge_when_nothing_is_black():
    w, h = 64, 32
    lidar = Lidar(w, h)  # bottom centre
    d = lidar.read(np.full((h, w), 200, dtype=np.uint8))
    np.testing.assert_array_equal(d, lidar.edge_lengths)
    assert d[9] == h  # straight up through every row
    assert d.max() <= np.hypot(w, h)


def test_threshold_means_all_channels_dark():
    w, h = 41, 41
    frame = np.full((h, w, 3), 200, dtype=np.uint8)
    frame[40 - 10, 20] = (0, 0, 200)  # red is not black
    frame[40 - 20, 20] = (54, 54, 54)  # just below the threshold
    lidar = Lidar(w, h, origin=(20, 40), black_threshold=55)
    assert lidar.read(frame)[9] == 20


@pytest.mark.parametrize("channels", [0, 3, 4])
def test_vectorised_equals_the_per_pixel_walk(channels):
    rng = np.random.default_rng(channels)
    w, h = 96, 48
    lidar = Lidar(w, h, origin=(47.5, 46.0))
    for _ in range(20):
        shape = (h, w) if channels == 0 else (h, w, channels)
        frame = np.where(rng.random(shape) < 0.02, 0, 150).astype(np.uint8)
        np.testing.assert_array_equal(lidar.read(frame), read_lidar_loop(frame, lidar))


def test_wrong_frame_size_is_refused():
    with pytest.raises(ValueError, match="64x32"):
        Lidar(64, 32).read(np.zeros((10, 10), dtype=np.uint8))


def test_lidar_reads_the_simulated_road_edges():
    """On the simulator's straight start, the side beams stop at the walls: road width apart."""
    from tmrl_trackmania.settings import SimSettings
    from tmrl_trackmania.sim.game import SimulatedGame

    game = SimulatedGame(SimSettings(view_width_m=40.0))  # not started: only its renderer is used
    track = game.track
    i = int(20 / 0.25)
    game.teleport(track.centre[i, 0], track.centre[i, 1], track.heading[i])
    w, h = 256, 128
    frame = game.render(w, h)
    lidar = Lidar(w, h, origin=((w - 1) / 2, h - 3))
    d = lidar.read(frame)
    metres_per_px = 40.0 / w
    left, right = d[0] * metres_per_px, d[18] * metres_per_px
    assert left + right == pytest.approx(track.width, abs=0.5)
    assert left == pytest.approx(track.width / 2, abs=0.5)
