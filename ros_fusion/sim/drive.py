"""Simulate a drive: every sensor of a rig firing on its own clock, plus ground truth.

`simulate_drive` is the one entry point (CLI `simulate`, training-data and
demo-bag generation). It is a generator: payloads are produced in capture
order and released in `publish_ns` order (capture + latency + |jitter|), ties
broken by sensor name then sequence, so the stream is deterministic.
Every random draw comes from a generator seeded by (seed, purpose), never
from the clock or dict/set iteration order, so the same inputs give
bit-identical payloads. Faults are applied after generation, so a faulted
drive equals the clean drive outside its fault windows.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..core.events import GROUND_TRUTH_TOPIC, SIM_EPOCH_NS, Payload, SensorEvent
from ..core.rig import Rig, SensorSpec
from ..core.types import NS_PER_S, Modality
from .camera import camera_info, render_camera
from .faults import FaultSpec, parse_fault, scripted_faults
from .ground_truth import ground_truth
from .imaging_radar import imaging_radar_scan, is_imaging_radar
from .inertial import ImuModel, WheelOdometry
from .lidar import lidar_sweep
from .radar import radar_scan
from .scenarios import get_scenario, list_scenarios
from .world import World

__all__ = ["simulate_drive", "list_scenarios", "parse_fault", "FaultSpec", "DriveSimulator"]

MAX_DURATION_S = 3600.0


@dataclass
class _Capture:
    t_ns: int  # capture time relative to the drive start
    order: int
    sensor: SensorSpec


def effective_faults(
    rig: Rig, scenario: str, duration_s: float, faults: list[FaultSpec] | None = None
) -> list[FaultSpec]:
    """All faults a drive will contain: the ones asked for plus the scenario's scripted schedule.

    Bags record this list (metadata ``faults``) so evaluation knows what was injected and when.
    """
    out = list(faults or [])
    if get_scenario(scenario).scripted_faults:
        first = {m: (rig.of(m)[0].name if rig.of(m) else None) for m in ("camera", "lidar", "radar")}
        out += scripted_faults(float(duration_s), first["camera"], first["lidar"], first["radar"])
    for f in out:
        if f.sensor not in rig.sensors:
            raise ValueError(f"fault {f}: no sensor {f.sensor!r} in rig {rig.name} (one of {sorted(rig.sensors)})")
    return out


class DriveSimulator:
    """Holds the world and per-sensor state; `events()` yields the drive.

    Exposed (not just the function) so tests and tools can look at the world
    the sensors were simulated from (trajectory, actors, static geometry).
    """

    def __init__(self, rig: Rig, scenario: str, seed: int, duration_s: float,
                 faults: list[FaultSpec] | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not isinstance(duration_s, (int, float)) or not math.isfinite(duration_s) or duration_s <= 0:
            raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
        if duration_s > MAX_DURATION_S:
            raise ValueError(f"duration_s {duration_s} is longer than the {MAX_DURATION_S:.0f} s limit")
        self.rig = rig
        self.scenario = get_scenario(scenario)
        self.seed = int(seed)
        self.duration_s = float(duration_s)
        self.world = World(self.scenario, self.seed, self.duration_s)
        self.names = sorted(rig.sensors)
        self.faults = effective_faults(rig, scenario, self.duration_s, faults)
        lidars = rig.of(Modality.LIDAR)
        self.gt_sensor = lidars[0].name if lidars else None
        self._imu: dict[str, ImuModel] = {}
        self._odo: dict[str, WheelOdometry] = {}
        self._rng: dict[str, np.random.Generator] = {}
        self._noise_bank: dict[str, np.ndarray] = {}
        # Per LiDAR/radar: returns per actor in its latest capture (ground truth's num_points).
        self._returns: dict[str, np.ndarray] = {}
        for i, name in enumerate(self.names):
            spec = rig.sensors[name]
            self._rng[name] = np.random.default_rng([self.seed, 100 + i])
            if spec.modality == Modality.IMU:
                self._imu[name] = ImuModel(spec, np.random.default_rng([self.seed, 200 + i]))
            elif spec.modality == Modality.ODOMETRY:
                self._odo[name] = WheelOdometry(spec, np.random.default_rng([self.seed, 300 + i]))

    # ---------------------------------------------------------------- schedule
    def captures(self) -> list[_Capture]:
        end_ns = int(round(self.duration_s * NS_PER_S))
        out: list[_Capture] = []
        phase_rng = np.random.default_rng([self.seed, 2])
        for i, name in enumerate(self.names):
            spec = self.rig.sensors[name]
            period_ns = int(round(NS_PER_S / spec.rate_hz))
            t = int(phase_rng.integers(0, period_ns))
            while t < end_ns:
                out.append(_Capture(t, i, spec))
                t += period_ns
        out.sort(key=lambda c: (c.t_ns, c.order))
        return out

    def noise_scale(self, sensor: str, t_s: float) -> float:
        k = 1.0
        for f in self.faults:
            if f.kind == "noise" and f.sensor == sensor and f.active(t_s):
                k *= float(f.value or 1.0)
        return k

    def generate(self, spec: SensorSpec, t_s: float, stamp_ns: int) -> list[tuple[str, Payload]]:
        """Payloads (topic, payload) of one capture of `spec` at sim time `t_s`."""
        rng = self._rng[spec.name]
        k = self.noise_scale(spec.name, t_s)
        w = self.world
        if spec.modality == Modality.LIDAR:
            self._returns[spec.name] = counts = np.zeros(len(w.actors), np.int64)
            return [(spec.topic, lidar_sweep(w, spec, t_s, rng, k, stamp_ns, counts))]
        if spec.modality == Modality.CAMERA:
            img = render_camera(w, spec, t_s, rng, k, stamp_ns, noise_bank=self._noise_bank)
            out: list[tuple[str, Payload]] = []
            if spec.info_topic:
                out.append((spec.info_topic, camera_info(spec, stamp_ns)))
            out.append((spec.topic, img))
            return out
        if spec.modality == Modality.RADAR:
            self._returns[spec.name] = counts = np.zeros(len(w.actors), np.int64)
            scan = imaging_radar_scan if is_imaging_radar(spec) else radar_scan
            return [(spec.topic, scan(w, spec, t_s, rng, k, stamp_ns, counts))]
        if spec.modality == Modality.IMU:
            return [(spec.topic, self._imu[spec.name].sample(w.ego, t_s, k, stamp_ns))]
        if spec.modality == Modality.ODOMETRY:
            return [(spec.topic, self._odo[spec.name].sample(w.ego, t_s, k, stamp_ns))]
        raise ValueError(f"sensor {spec.name}: modality {spec.modality} cannot be simulated")

    def observed_returns(self) -> np.ndarray:
        """Per actor: returns in the ground-truth LiDAR's latest sweep plus every radar's latest scan.

        nuScenes' num_lidar_pts + num_radar_pts; counted from the physics before any
        injected fault, so a dropped sensor does not make objects "unseen".
        """
        total = np.zeros(len(self.world.actors), np.int64)
        for name, counts in self._returns.items():
            if name == self.gt_sensor or self.rig.sensors[name].modality == Modality.RADAR:
                total += counts
        return total

    # ------------------------------------------------------------------ events
    def events(self, progress: Callable[[float], None] | None = None) -> Iterator[SensorEvent]:
        heap: list[tuple[int, int, int, SensorEvent]] = []
        seq = 0
        frozen: dict[str, list[tuple[str, Payload]]] = {}
        last: dict[str, list[tuple[str, Payload]]] = {}
        caps = self.captures()
        n_gt_order = len(self.names)
        for ci, cap in enumerate(caps):
            while heap and heap[0][0] <= cap.t_ns + SIM_EPOCH_NS:
                yield heapq.heappop(heap)[3]
            spec = cap.sensor
            t_s = cap.t_ns / NS_PER_S
            stamp = SIM_EPOCH_NS + cap.t_ns
            rng = self._rng[spec.name]
            publish = stamp + int(round((spec.latency_s + abs(rng.normal(0.0, spec.jitter_s))) * NS_PER_S))
            payloads = self.generate(spec, t_s, stamp)
            if spec.name == self.gt_sensor:
                gt = ground_truth(self.world, t_s, stamp, self.rig.base_frame, actor_returns=self.observed_returns())
                heapq.heappush(heap, (stamp, n_gt_order, seq,
                                      SensorEvent("ground_truth", GROUND_TRUTH_TOPIC, stamp, stamp, gt)))
                seq += 1
            payloads = self._apply_faults(spec.name, t_s, stamp, payloads, frozen, last)
            for topic, p in payloads:
                heapq.heappush(heap, (publish, cap.order, seq, SensorEvent(spec.name, topic, p.stamp_ns, publish, p)))
                seq += 1
            if progress is not None and (ci % 20 == 0):
                progress(min(t_s / self.duration_s, 1.0))
        while heap:
            yield heapq.heappop(heap)[3]
        if progress is not None:
            progress(1.0)

    def _apply_faults(self, name: str, t_s: float, stamp: int, payloads: list[tuple[str, Payload]],
                      frozen: dict, last: dict) -> list[tuple[str, Payload]]:
        mine = [f for f in self.faults if f.sensor == name and f.active(t_s)]
        kinds = {f.kind for f in mine}
        if "freeze" in kinds:
            if name not in frozen:
                frozen[name] = last.get(name, payloads)
            payloads = [(topic, dataclasses.replace(p, stamp_ns=stamp)) for topic, p in frozen[name]]
        else:
            frozen.pop(name, None)
            last[name] = payloads
        if "drop" in kinds:
            return []
        for f in mine:
            if f.kind == "delay":
                d = int(round(float(f.value or 0.0) * NS_PER_S))
                payloads = [(topic, dataclasses.replace(p, stamp_ns=p.stamp_ns - d)) for topic, p in payloads]
        return payloads


def simulate_drive(rig: Rig, scenario: str, seed: int, duration_s: float, *, faults: list[FaultSpec] | None = None,
                   progress: Callable[[float], None] | None = None) -> Iterator[SensorEvent]:
    """Yield the drive's SensorEvents sorted by publish_ns (see module docstring)."""
    sim = DriveSimulator(rig, scenario, seed, duration_s, faults)
    yield from sim.events(progress)
