"""The simulated car: a kinematic bicycle with an engine, brakes, drag, walls, gears and a finish line.

Not TrackMania's physics, only enough of it that driving well is learnable and driving badly is visible: the car
accelerates with gas, slows with brake (and reverses from a standstill), steers less at high speed and never beyond
its grip, and loses half its speed when it hits a wall. docs/trackmania.md gives the figures and their sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tmrl_trackmania.sim.track import Track

ENGINE_ACCEL = 14.0  # m/s^2 at standstill, fading to 0 at TOP_SPEED
TOP_SPEED = 95.0  # m/s at which the engine gives nothing more; drag caps the car lower (docs/trackmania.md)
BRAKE_DECEL = 25.0  # m/s^2
REVERSE_ACCEL = 5.0
REVERSE_TOP_SPEED = 8.0
DRAG = 0.0005  # 1/m (deceleration = DRAG * v^2)
ROLLING = 0.6  # m/s^2
WHEELBASE = 2.8  # m
MAX_STEER = 0.55  # rad at low speed
STEER_FADE_SPEED = 45.0  # m/s at which the steering angle is halved
#: the tyres' grip: the turn rate is capped so that the lateral acceleration stays below this (m/s^2, about 2 g)
MAX_LATERAL_ACCEL = 20.0
WALL_SPEED_FACTOR = 0.5
CAR_HALF_WIDTH = 1.0
#: upper bounds of gears 1..4 in km/h (5th above), where TrackMania 2020's car shifts up (docs/trackmania.md)
GEAR_TOPS_KMH = (100.0, 160.0, 235.0, 342.0, 1e9)
IDLE_RPM = 1500.0
MAX_RPM = 10500.0


@dataclass
class CarState:
    """Everything the telemetry and the renderer need."""

    x: float = 0.0
    z: float = 0.0
    heading: float = 0.0
    velocity: float = 0.0  # m/s along the heading, negative when reversing
    distance: float = 0.0  # m driven since the respawn
    finished: bool = False
    track_index: int = 0
    frozen_for: float = 0.0  # s of countdown left
    steer: float = 0.0
    gas: float = 0.0
    brake: float = 0.0
    wall_hits: int = 0

    @property
    def speed_kmh(self) -> float:
        return abs(self.velocity) * 3.6

    @property
    def gear(self) -> int:
        kmh = self.speed_kmh
        if self.velocity < -0.1:
            return 0  # reverse
        for gear, top in enumerate(GEAR_TOPS_KMH, start=1):
            if kmh < top:
                return gear
        return len(GEAR_TOPS_KMH)

    @property
    def rpm(self) -> float:
        gear = self.gear
        kmh = self.speed_kmh
        if gear <= 1:
            lo, hi = 0.0, GEAR_TOPS_KMH[0]
        else:
            lo, hi = GEAR_TOPS_KMH[gear - 2], min(GEAR_TOPS_KMH[gear - 1], 450.0)
        frac = min(1.0, max(0.0, (kmh - lo) / max(1e-6, hi - lo)))
        return IDLE_RPM + frac * (MAX_RPM - IDLE_RPM)


class Car:
    """The car on a track. :meth:`step` advances the physics by ``dt`` seconds under the current inputs."""

    def __init__(self, track: Track, countdown: float = 0.0) -> None:
        self.track = track
        self.countdown = countdown
        self.state = CarState()
        self.respawn()

    def respawn(self) -> None:
        """Back to the start line, standing still, the countdown running."""
        start = 1.0
        idx = int(start / (self.track.s[1] - self.track.s[0]))
        self.state = CarState(
            x=float(self.track.centre[idx, 0]),
            z=float(self.track.centre[idx, 1]),
            heading=float(self.track.heading[idx]),
            track_index=idx,
            frozen_for=self.countdown,
        )

    def set_inputs(self, gas: float, brake: float, steer: float) -> None:
        st = self.state
        st.gas = min(1.0, max(0.0, float(gas)))
        st.brake = min(1.0, max(0.0, float(brake)))
        st.steer = min(1.0, max(-1.0, float(steer)))

    def step(self, dt: float) -> None:
        st = self.state
        if st.finished:
            st.velocity = 0.0
            return
        if st.frozen_for > 0.0:
            st.frozen_for = max(0.0, st.frozen_for - dt)
            st.velocity = 0.0
            return
        v = st.velocity
        accel = 0.0
        if st.gas > 0.0 and v >= -0.1:
            accel += ENGINE_ACCEL * st.gas * max(0.0, 1.0 - v / TOP_SPEED)
        if st.brake > 0.0:
            if v > 0.3:
                accel -= BRAKE_DECEL * st.brake
            elif st.gas == 0.0:
                accel -= REVERSE_ACCEL * st.brake * (1.0 if v > -REVERSE_TOP_SPEED else 0.0)
        elif st.gas > 0.0 and v < -0.1:
            accel += BRAKE_DECEL * st.gas  # gas while rolling backwards brakes first
        accel -= DRAG * v * abs(v) + ROLLING * math.copysign(1.0, v) * (abs(v) > 0.05)
        new_v = v + accel * dt
        if st.gas == 0.0 and st.brake == 0.0 and v * new_v <= 0.0:
            new_v = 0.0  # friction stops the car, never reverses it
        if v > 0.3 and new_v < 0.0 and st.brake > 0.0:
            new_v = 0.0  # braking stops the car; reversing needs a new press from a standstill
        st.velocity = new_v

        angle = st.steer * MAX_STEER / (1.0 + abs(new_v) / STEER_FADE_SPEED)
        # steering right (positive) turns clockwise seen from above
        yaw_rate = new_v / WHEELBASE * math.tan(angle)
        if abs(new_v) > 1e-3:  # beyond the grip, the car runs wide instead of turning on a dime
            limit = MAX_LATERAL_ACCEL / abs(new_v)
            yaw_rate = max(-limit, min(limit, yaw_rate))
        st.heading -= yaw_rate * dt
        dx = new_v * math.cos(st.heading) * dt
        dz = new_v * math.sin(st.heading) * dt
        st.x += dx
        st.z += dz
        st.distance += math.hypot(dx, dz)
        self._collide()

    def _collide(self) -> None:
        st = self.state
        idx, lateral = self.track.nearest(np.array([st.x, st.z]), st.track_index)
        st.track_index = idx
        limit = self.track.width / 2 - CAR_HALF_WIDTH
        if abs(lateral) > limit:
            theta = self.track.heading[idx]
            normal = np.array([-math.sin(theta), math.cos(theta)])
            pushed = self.track.centre[idx] + normal * math.copysign(limit, lateral)
            st.x, st.z = float(pushed[0]), float(pushed[1])
            st.velocity *= WALL_SPEED_FACTOR
            # glance off the wall: a car going along the road is turned most of the way back to the road's heading
            diff = _angle_diff(st.heading, theta)
            if abs(diff) < math.pi / 2:
                st.heading = float(theta + 0.3 * diff)
            st.wall_hits += 1
        if idx >= len(self.track.centre) - 2 and st.distance > 0.5 * self.track.length:
            st.finished = True
            st.velocity = 0.0


def _angle_diff(a: float, b: float) -> float:
    return (a - b + math.pi) % (2 * math.pi) - math.pi


class Autopilot:
    """Drives a :class:`Car` around its track (pure pursuit on the centre line, speed from the curvature ahead)."""

    def __init__(self, car: Car, top_speed: float = 25.0, lateral_accel: float = 12.0) -> None:
        self.car = car
        self.top_speed = top_speed
        self.lateral_accel = lateral_accel

    def inputs(self) -> tuple[float, float, float]:
        """``(gas, brake, steer)`` for the car's current state."""
        st = self.car.state
        track = self.car.track
        v = max(0.0, st.velocity)
        look = 6.0 + 0.4 * v
        step = track.s[1] - track.s[0]
        target = track.centre[min(len(track.centre) - 1, st.track_index + int(look / step))]
        bearing = math.atan2(target[1] - st.z, target[0] - st.x)
        err = _angle_diff(bearing, st.heading)  # positive: target to the left
        steer = max(-1.0, min(1.0, -2.5 * err))
        kappa = track.curvature_ahead(st.track_index, 10.0 + 1.2 * v)
        wanted = min(self.top_speed, math.sqrt(self.lateral_accel / max(kappa, 1e-4)))
        if v < wanted - 0.5:
            return 1.0, 0.0, steer
        if v > wanted + 2.0:
            return 0.0, min(1.0, (v - wanted) / 5.0), steer
        return 0.3, 0.0, steer
