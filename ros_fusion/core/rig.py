"""Sensor rig: which sensors exist, where they are, at what rates (docs/DESIGN.md §4).

A rig file (`config/<rig>.yaml`) is untrusted input: every problem raises
`ConfigError` naming the key path, so a user knows what to fix.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .transforms import xyz_rpy_to_transform
from .types import CameraIntrinsics, Modality


class ConfigError(ValueError):
    """A configuration value is missing or wrong; `key` is its dotted path."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key = key
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}")


#: Full-scale LiDAR intensity when the rig does not give one: the 8-bit convention of most drivers.
DEFAULT_INTENSITY_MAX = 255.0


@dataclass
class SensorSpec:
    """One sensor of the rig. `extrinsic` maps sensor-frame points to base_link."""

    name: str
    modality: Modality
    topic: str
    frame_id: str
    rate_hz: float
    extrinsic: np.ndarray = field(default_factory=lambda: np.eye(4))
    latency_s: float = 0.0
    jitter_s: float = 0.0
    info_topic: str = ""
    child_frame_id: str = ""
    intrinsics: CameraIntrinsics | None = None
    #: LiDAR only: the intensity value of the strongest return, as the driver reports it (255 for 8-bit
    #: drivers — Velodyne packets, nuScenes, View-of-Delft —, 1 for KITTI's 0–1 reflectance). The network
    #: reads intensity / intensity_max, so a sensor on another scale must say so here.
    intensity_max: float = DEFAULT_INTENSITY_MAX
    #: Radar only: the width of the unambiguous radial-velocity interval [m/s] when the driver reports v_r
    #: folded into ±half of it (Astyx 6455: 10.39); None = not folded. Used when the scan's own Doppler
    #: gives the ego velocity (`core.doppler_ego`).
    velocity_interval_mps: float | None = None
    #: Radar only: dB added to the driver's `rcs` field to give dBsm, the unit the network reads (0 for
    #: drivers that report dBsm: Continental ARS 408, nuScenes, View-of-Delft). A radar whose driver reports
    #: a calibrated level on another reference (e.g. dB over 1 cm²: -40) says so here.
    rcs_offset_db: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)
    #: Optional synchroniser settings (`sync:` in the rig file): offset_ms, tolerance_ms,
    #: timeout_ms, buffer_size; absent keys are derived from rate and latency by `core.sync`.
    sync: dict[str, float] = field(default_factory=dict)

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


@dataclass
class Rig:
    name: str
    base_frame: str
    sensors: dict[str, SensorSpec]
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    #: `rig.still_frames`: each LiDAR sweep is a snapshot unrelated to the one before it (KITTI object
    #: frames: one sweep per frame, ids not consecutive in time). The pipeline then never pairs a sweep
    #: with "the previous sweep"; the converter stamps such frames one LiDAR period apart.
    still_frames: bool = False

    def of(self, modality: Modality | str) -> list[SensorSpec]:
        m = Modality(modality)
        return [s for s in self.sensors.values() if s.modality == m]

    def by_topic(self) -> dict[str, SensorSpec]:
        return {s.topic: s for s in self.sensors.values()}

    def to_yaml(self) -> str:
        """The rig as YAML text (stored in bags on `/rig` so a bag describes itself)."""
        return yaml.safe_dump(self.raw, sort_keys=False)


def _num(value: Any, key: str, source: str, *, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number, got {value!r}", source)
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(key, f"must be finite, got {value!r}", source)
    if positive and v <= 0:
        raise ConfigError(key, f"must be > 0, got {value!r}", source)
    if minimum is not None and v < minimum:
        raise ConfigError(key, f"must be >= {minimum}, got {value!r}", source)
    return v


def _vec(value: Any, n: int, key: str, source: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ConfigError(key, f"expected a list of {n} numbers, got {value!r}", source)
    return np.array([_num(v, f"{key}[{i}]", source) for i, v in enumerate(value)])


def parse_extrinsics(value: Any, key: str, source: str = "") -> np.ndarray:
    """`{xyz: [..], rpy: [..]}` or `{matrix: 4x4}` (or a bare 4x4 list) → 4×4."""
    if isinstance(value, list):
        value = {"matrix": value}
    if not isinstance(value, dict):
        raise ConfigError(key, "expected {xyz, rpy} or {matrix: 4x4}", source)
    if "matrix" in value:
        m = value["matrix"]
        if not isinstance(m, list) or len(m) != 4:
            raise ConfigError(f"{key}.matrix", "expected 4 rows of 4 numbers", source)
        T = np.vstack([_vec(r, 4, f"{key}.matrix[{i}]", source) for i, r in enumerate(m)])
        if not np.allclose(T[3], [0, 0, 0, 1]):
            raise ConfigError(f"{key}.matrix", "last row must be [0, 0, 0, 1]", source)
        R = T[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
            raise ConfigError(f"{key}.matrix", "rotation part is not orthonormal", source)
        return T
    unknown = set(value) - {"xyz", "rpy"}
    if unknown:
        raise ConfigError(key, f"unknown keys {sorted(unknown)} (use xyz, rpy or matrix)", source)
    if "xyz" not in value:
        raise ConfigError(f"{key}.xyz", "missing", source)
    xyz = _vec(value["xyz"], 3, f"{key}.xyz", source)
    rpy = _vec(value.get("rpy", [0.0, 0.0, 0.0]), 3, f"{key}.rpy", source)
    return xyz_rpy_to_transform(xyz, rpy)


def parse_intrinsics(value: Any, key: str, source: str = "") -> CameraIntrinsics:
    if not isinstance(value, dict):
        raise ConfigError(key, "expected a mapping with width, height, fx, fy, cx, cy", source)
    for k in ("width", "height", "fx", "fy", "cx", "cy"):
        if k not in value:
            raise ConfigError(f"{key}.{k}", "missing", source)
    w = int(_num(value["width"], f"{key}.width", source, positive=True))
    h = int(_num(value["height"], f"{key}.height", source, positive=True))
    fx = _num(value["fx"], f"{key}.fx", source, positive=True)
    fy = _num(value["fy"], f"{key}.fy", source, positive=True)
    cx = _num(value["cx"], f"{key}.cx", source)
    cy = _num(value["cy"], f"{key}.cy", source)
    model = value.get("distortion_model", "plumb_bob")
    n_d = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}
    if model not in n_d:
        raise ConfigError(f"{key}.distortion_model", f"unknown model {model!r} (one of {sorted(n_d)})", source)
    D = _vec(value.get("D", [0.0] * n_d[model]), n_d[model], f"{key}.D", source)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    return CameraIntrinsics(width=w, height=h, K=K, D=D, distortion_model=model)


_SENSOR_KEYS = {
    "modality", "topic", "frame_id", "rate_hz", "latency_ms", "jitter_ms", "extrinsics",
    "intrinsics", "info_topic", "child_frame_id", "model", "sync", "intensity_max",
    "velocity_interval_mps", "rcs_offset_db",
}
_SYNC_KEYS = ("offset_ms", "tolerance_ms", "timeout_ms", "buffer_size")


def parse_sync(value: Any, key: str, source: str = "") -> dict[str, float]:
    """`sync: {offset_ms, tolerance_ms, timeout_ms, buffer_size}` (all optional) → validated dict."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping with any of {list(_SYNC_KEYS)}", source)
    unknown = set(value) - set(_SYNC_KEYS)
    if unknown:
        raise ConfigError(key, f"unknown keys {sorted(unknown)} (use {', '.join(_SYNC_KEYS)})", source)
    out: dict[str, float] = {}
    if "offset_ms" in value:
        out["offset_ms"] = _num(value["offset_ms"], f"{key}.offset_ms", source)
    if "tolerance_ms" in value:
        out["tolerance_ms"] = _num(value["tolerance_ms"], f"{key}.tolerance_ms", source, positive=True)
    if "timeout_ms" in value:
        out["timeout_ms"] = _num(value["timeout_ms"], f"{key}.timeout_ms", source, minimum=0.0)
    if "buffer_size" in value:
        b = value["buffer_size"]
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 100_000:
            raise ConfigError(f"{key}.buffer_size", f"expected an integer in [1, 100000], got {b!r}", source)
        out["buffer_size"] = b
    return out


def _parse_sensor(name: str, d: Any, source: str) -> SensorSpec:
    key = f"sensors.{name}"
    if not isinstance(d, dict):
        raise ConfigError(key, "expected a mapping", source)
    unknown = set(d) - _SENSOR_KEYS
    if unknown:
        raise ConfigError(key, f"unknown keys {sorted(unknown)}", source)
    if "modality" not in d:
        raise ConfigError(f"{key}.modality", "missing", source)
    try:
        modality = Modality(d["modality"])
    except ValueError:
        raise ConfigError(
            f"{key}.modality", f"unknown sensor kind {d['modality']!r} (one of {[m.value for m in Modality]})", source
        ) from None
    for k in ("topic", "rate_hz"):
        if k not in d:
            raise ConfigError(f"{key}.{k}", "missing", source)
    topic = d["topic"]
    if not isinstance(topic, str) or not topic.startswith("/"):
        raise ConfigError(f"{key}.topic", f"must be an absolute topic name, got {topic!r}", source)
    rate = _num(d["rate_hz"], f"{key}.rate_hz", source, positive=True)
    if rate > 2000:
        raise ConfigError(f"{key}.rate_hz", f"implausible rate {rate} Hz (max 2000)", source)
    if "extrinsics" not in d and modality in (Modality.CAMERA, Modality.LIDAR, Modality.RADAR):
        raise ConfigError(f"{key}.extrinsics", "missing (sensor -> base_link transform is required)", source)
    T = parse_extrinsics(d.get("extrinsics", {"xyz": [0, 0, 0]}), f"{key}.extrinsics", source)
    intr = None
    if modality == Modality.CAMERA:
        if "intrinsics" in d:
            intr = parse_intrinsics(d["intrinsics"], f"{key}.intrinsics", source)
    model = d.get("model", {}) or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{key}.model", "expected a mapping", source)
    intensity_max = DEFAULT_INTENSITY_MAX
    if "intensity_max" in d:
        if modality != Modality.LIDAR:
            raise ConfigError(f"{key}.intensity_max", f"only a LiDAR has an intensity scale, not a {modality.value}",
                              source)
        intensity_max = _num(d["intensity_max"], f"{key}.intensity_max", source, positive=True)
        if intensity_max > 1e6:
            raise ConfigError(f"{key}.intensity_max", f"implausible full-scale intensity {intensity_max} (max 1e6)",
                              source)
    interval = None
    if "velocity_interval_mps" in d:
        if modality != Modality.RADAR:
            raise ConfigError(f"{key}.velocity_interval_mps",
                              f"only a radar has a radial-velocity interval, not a {modality.value}", source)
        interval = _num(d["velocity_interval_mps"], f"{key}.velocity_interval_mps", source, positive=True)
    rcs_offset = 0.0
    if "rcs_offset_db" in d:
        if modality != Modality.RADAR:
            raise ConfigError(f"{key}.rcs_offset_db", f"only a radar has an RCS scale, not a {modality.value}",
                              source)
        rcs_offset = _num(d["rcs_offset_db"], f"{key}.rcs_offset_db", source)
        if abs(rcs_offset) > 100.0:
            raise ConfigError(f"{key}.rcs_offset_db", f"implausible RCS offset {rcs_offset} dB (at most ±100)", source)
    return SensorSpec(
        name=name,
        modality=modality,
        topic=topic,
        frame_id=str(d.get("frame_id", name)),
        rate_hz=rate,
        extrinsic=T,
        latency_s=_num(d.get("latency_ms", 0.0), f"{key}.latency_ms", source, minimum=0.0) / 1000.0,
        jitter_s=_num(d.get("jitter_ms", 0.0), f"{key}.jitter_ms", source, minimum=0.0) / 1000.0,
        info_topic=str(d.get("info_topic", "")),
        child_frame_id=str(d.get("child_frame_id", "")),
        intrinsics=intr,
        intensity_max=intensity_max,
        velocity_interval_mps=interval,
        rcs_offset_db=rcs_offset,
        model=copy.deepcopy(model),
        sync=parse_sync(d.get("sync"), f"{key}.sync", source),
    )


def rig_from_dict(d: Any, source: str = "") -> Rig:
    if not isinstance(d, dict):
        raise ConfigError("<root>", "rig file must be a mapping with 'rig' and 'sensors'", source)
    meta = d.get("rig", {}) or {}
    if not isinstance(meta, dict):
        raise ConfigError("rig", "expected a mapping", source)
    sensors = d.get("sensors")
    if not isinstance(sensors, dict) or not sensors:
        raise ConfigError("sensors", "missing or empty: list at least one sensor", source)
    specs = {str(n): _parse_sensor(str(n), s, source) for n, s in sensors.items()}
    topics: dict[str, str] = {}
    for s in specs.values():
        if s.topic in topics:
            raise ConfigError(f"sensors.{s.name}.topic", f"{s.topic} already used by {topics[s.topic]}", source)
        topics[s.topic] = s.name
    still = meta.get("still_frames", False)
    if not isinstance(still, bool):
        raise ConfigError("rig.still_frames", f"expected true or false, got {still!r}", source)
    return Rig(
        name=str(meta.get("name", Path(source).stem if source else "rig")),
        base_frame=str(meta.get("base_frame", "base_link")),
        sensors=specs,
        source=source,
        raw=copy.deepcopy(d),
        still_frames=still,
    )


def load_yaml_file(path: str | Path, key: str) -> Any:
    """Parse a YAML config file; a missing file or bad YAML is a ConfigError naming `key` or the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(key, f"no such file: {p}")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError("<yaml>", f"not valid YAML: {e}", str(p)) from None


def load_rig(path: str | Path) -> Rig:
    return rig_from_dict(load_yaml_file(path, "rig_file"), str(path))


def rig_from_yaml(text: str, source: str = "<string>") -> Rig:
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError("<yaml>", f"not valid YAML: {e}", source) from None
    return rig_from_dict(d, source)
