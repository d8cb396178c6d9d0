"""Named scenarios: the knobs that make `urban`, `highway`, `night_rain` different.

Each scenario is plain data; `world.build_world` turns it plus a seed into a
world. `sensor_faults` is `urban` plus a fault schedule (see `faults.py`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    urban: bool
    lanes_per_dir: int
    lane_width: float
    sidewalk: float
    radius_range: tuple[float, float]  # curve radii [m]
    straight_range: tuple[float, float]  # straight lengths [m]
    speed_range: tuple[float, float]  # ego target speeds [m/s]
    traffic_spacing: tuple[float, float]  # gap between vehicles in a lane [m]
    class_mix: dict[str, float]  # vehicle classes in lanes
    pedestrians_per_100m: float
    crossing_per_100m: float
    cyclists_per_100m: float
    barrier_rows_per_km: float
    night: bool = False
    rain_mm_h: float = 0.0
    scripted_faults: bool = False


_URBAN = Scenario(
    name="urban",
    description="curvy city street, 8-14 m/s with stops, many pedestrians, cyclists, poles, trees and buildings",
    urban=True, lanes_per_dir=1, lane_width=3.5, sidewalk=3.0,
    radius_range=(40.0, 150.0), straight_range=(40.0, 120.0), speed_range=(6.0, 14.0),
    traffic_spacing=(18.0, 45.0), class_mix={"car": 0.8, "truck": 0.1, "bus": 0.1},
    pedestrians_per_100m=5.0, crossing_per_100m=0.6, cyclists_per_100m=1.2, barrier_rows_per_km=4.0,
)
_HIGHWAY = Scenario(
    name="highway",
    description="motorway, 2 lanes each way, 22-33 m/s, trucks and buses, guardrails and noise walls",
    urban=False, lanes_per_dir=2, lane_width=3.75, sidewalk=2.5,
    radius_range=(400.0, 1000.0), straight_range=(150.0, 400.0), speed_range=(22.0, 33.0),
    traffic_spacing=(35.0, 90.0), class_mix={"car": 0.6, "truck": 0.3, "bus": 0.1},
    pedestrians_per_100m=0.05, crossing_per_100m=0.0, cyclists_per_100m=0.0, barrier_rows_per_km=1.0,
)
SCENARIOS: dict[str, Scenario] = {
    "urban": _URBAN,
    "highway": _HIGHWAY,
    "night_rain": Scenario(
        **{**_URBAN.__dict__, "name": "night_rain",
           "description": "the urban drive at night in heavy rain: dark noisy camera with streaks, LiDAR rain loss",
           "night": True, "rain_mm_h": 25.0}
    ),
    "sensor_faults": Scenario(
        **{**_URBAN.__dict__, "name": "sensor_faults",
           "description": "urban + scripted faults: camera drop, LiDAR freeze, radar delay, LiDAR noise burst",
           "scripted_faults": True}
    ),
}


def list_scenarios() -> dict[str, str]:
    """Scenario name → one-line description (for `ros-fusion simulate --help`)."""
    return {name: s.description for name, s in SCENARIOS.items()}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {sorted(SCENARIOS)}")
    return SCENARIOS[name]
