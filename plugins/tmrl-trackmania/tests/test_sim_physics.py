"""The simulated car and tracks stay within the ranges docs/trackmania.md states, and both open tracks can be driven
to the finish line (by the autopilot), the tight one only slower."""

from __future__ import annotations

import math

import pytest
from tmrl_trackmania.sim.car import Autopilot, Car
from tmrl_trackmania.sim.track import build_track

DT = 0.01


def drive(car: Car, gas: float, brake: float, steer: float, seconds: float) -> None:
    car.set_inputs(gas, brake, steer)
    for _ in range(int(round(seconds / DT))):
        car.step(DT)


def straight_car() -> Car:
    return Car(build_track("oval"))  # an 80 m straight, then a wide half circle


def test_acceleration_braking_and_gears_are_in_the_documented_ranges():
    car = straight_car()
    t = 0.0
    car.set_inputs(1.0, 0.0, 0.0)
    while car.state.speed_kmh < 100.0:
        car.step(DT)
        t += DT
    assert 2.0 <= t <= 3.5, t  # 0 to 100 km/h
    assert car.state.gear == 2  # TrackMania 2020 shifts to 2nd at 100 km/h
    distance, t = car.state.distance, 0.0
    car.set_inputs(0.0, 1.0, 0.0)
    while car.state.velocity > 0.0:
        car.step(DT)
        t += DT
    assert 10.0 <= car.state.distance - distance <= 25.0 and t < 1.5  # braking from 100 km/h
    # top speed on a long straight (no walls: an empty track of the car's own)
    car = straight_car()
    car.track = build_track("oval", width=1e4)
    drive(car, 1.0, 0.0, 0.0, 60.0)
    assert 240.0 <= car.state.speed_kmh <= 300.0
    assert car.state.gear == 4


def test_steering_turns_tighter_at_low_speed():
    radii = []
    for kmh in (20.0, 150.0):
        car = straight_car()
        car.track = build_track("oval", width=1e4)
        car.state.velocity = kmh / 3.6
        car.set_inputs(0.0, 0.0, 1.0)
        heading = car.state.heading
        car.step(DT)
        rate = abs(car.state.heading - heading) / DT
        radii.append(car.state.velocity / rate)
    assert 4.0 <= radii[0] <= 8.0 and radii[1] > 3 * radii[0]


@pytest.mark.parametrize("track, seconds", [("default", 40.0), ("tight", 60.0)])
def test_the_autopilot_finishes_both_open_tracks(track, seconds):
    car = Car(build_track(track))
    pilot = Autopilot(car, top_speed=25.0, lateral_accel=8.0)
    t = 0.0
    while not car.state.finished and t < seconds:
        car.set_inputs(*pilot.inputs())
        car.step(DT)
        t += DT
    assert car.state.finished, (track, car.state)
    assert car.state.wall_hits <= 3


def test_the_tight_track_punishes_the_default_tracks_pace():
    """Full gas through the first hairpin: the car hits the wall (an agent tuned to the default track's long
    turns does not drive the tight one)."""
    car = Car(build_track("tight"))
    pilot = Autopilot(car, top_speed=40.0, lateral_accel=40.0)  # brakes far too little for 8 m radii
    for _ in range(int(12.0 / DT)):
        car.set_inputs(*pilot.inputs())
        car.step(DT)
    assert car.state.wall_hits > 0
    assert build_track("tight").width < build_track("default").width
    radii = [abs(1.0 / k) for k in _curvatures("tight") if k]
    assert min(radii) < 10.0 < min(abs(1.0 / k) for k in _curvatures("default") if k)


def _curvatures(name: str) -> list[float]:
    from tmrl_trackmania.sim.track import LAYOUTS

    return [math.radians(turn) / length for length, turn in LAYOUTS[name]]
