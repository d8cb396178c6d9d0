"""nuScenes → one ConvertedDrive per scene (via nuscenes-devkit): cameras, LiDAR, radars, IMU, odometry, GT.

- base_link is nuScenes' ego frame (x forward, y left, z up; `calibrated_sensor`
  gives every sensor → ego directly, so the rig's extrinsics are those records
  as 4×4 matrices). The ego frame is not exactly on the ground everywhere, but
  nuScenes' ego poses have z = 0, so it sits at road level.
- Times are the recorded ones: every ``timestamp`` (µs) × 1000 → ns, logged at
  capture time (nuScenes has no arrival times). The nuScenes LiDAR has no
  per-point time field, so none is invented; ``ring`` is kept.
- Cameras: the JPEG bytes as they are (CompressedImage, format ``jpeg``) +
  CameraInfo from ``camera_intrinsic`` (nuScenes images are undistorted).
- Radars: PointCloud2 x y z v_r rcs v_r_comp (+ dyn_prop, ambig_state,
  invalid_state as uint8 so users can apply the devkit's filters; nothing is
  filtered here). nuScenes' (vx, vy) is the Doppler velocity as a vector
  along the line of sight, so v_r = (x·vx + y·vy)/√(x²+y²) (positive =
  receding) and v_r_comp likewise from (vx_comp, vy_comp).
- Odometry (``/vehicle/odometry``, odom = the scene's first LIDAR_TOP ego
  pose): from the ego poses of every LIDAR_TOP sweep (20 Hz), twist by finite
  differences. IMU (``/sensors/imu``): from the CAN bus expansion
  (``can_bus/<scene>_ms_imu.json``, 100 Hz) when present, assumed in the ego
  frame's axes; without it the rig has no IMU and the report says so.
- Ground truth at each key frame: annotations mapped to our classes
  (`NUSCENES_CATEGORY_MAP`), transformed into the ego frame at the LIDAR_TOP
  key frame; size order (width, length, height) becomes [l, w, h]; velocity
  from consecutive annotations (the devkit's ``box_velocity``), rotated into
  base_link axes; an annotation with no neighbour gets 0 and is counted in the
  metadata (``gt_velocity_unknown``).

nuscenes-devkit is imported lazily: without it, a ConversionError names the package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.transforms import quat_to_matrix
from ..core.types import DEFAULT_CLASSES, CameraInfo, CameraIntrinsics, CompressedImage, ImuSample, PointCloud
from .convert_common import (
    JPEG_MAGIC,
    NUSCENES_CATEGORY_MAP,
    PNG_MAGIC,
    ConversionError,
    ConversionReport,
    ConvertedDrive,
    EventRef,
    SkipFile,
    extrinsics_entry,
    ground_truth_ref,
    image_format,
    intrinsics_entry,
    make_obstacles,
    odometry_from_poses,
    read_bytes,
    read_float32_bin,
    rig_dict,
    yaw_of,
)

DEVKIT_HINT = ("nuScenes conversion needs the 'nuscenes-devkit' package: "
               "pip install --no-deps nuscenes-devkit==1.2.0 pyquaternion matplotlib scikit-learn pillow tqdm "
               "cachetools")
RATES_HZ = {"lidar": 20.0, "camera": 12.0, "radar": 13.0}
RADAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("v_r", "<f4"), ("rcs", "<f4"),
                        ("v_r_comp", "<f4"), ("dyn_prop", "u1"), ("ambig_state", "u1"), ("invalid_state", "u1")])
LIDAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("ring", "<u2")])
#: Full scale of nuScenes LiDAR intensity: the HDL-32E's 8-bit calibrated reflectivity, 0–255 in the
#: `.pcd.bin` rows x, y, z, intensity, ring (nuScenes devkit `LidarPointCloud`; Caesar et al., CVPR 2020).
NUSCENES_INTENSITY_MAX = 255.0
#: nuScenes radars are Continental ARS 408-21s whose cluster `rcs` is in dBsm (0.5 dBsm steps, -64..63.5;
#: ARS 408-21 technical documentation, Cluster_RCS): the rig's `rcs_offset_db` is 0.
NUSCENES_RCS_OFFSET_DB = 0.0
IMU_TOPIC = "/sensors/imu"
ODOMETRY_TOPIC = "/vehicle/odometry"


def load_devkit() -> Any:
    """The NuScenes class, imported only when a conversion asks for it."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # the devkit imports pyplot at module level
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError as e:
        raise ConversionError(f"{DEVKIT_HINT} ({e})") from None
    return NuScenes


def sensor_name(channel: str) -> str:
    """``CAM_FRONT_LEFT`` → ``camera_front_left``, ``LIDAR_TOP`` → ``lidar_top``, radars stay ``radar_*``."""
    low = channel.lower()
    return "camera_" + low[4:] if low.startswith("cam_") else low


def wxyz_to_matrix(q: Sequence[float]) -> np.ndarray:
    w, x, y, z = (float(v) for v in q)
    return quat_to_matrix([x, y, z, w])


def record_transform(rec: dict[str, Any]) -> np.ndarray:
    """A calibrated_sensor / ego_pose record (translation + w-x-y-z rotation) → 4×4 child → parent."""
    T = np.eye(4)
    T[:3, :3] = wxyz_to_matrix(rec["rotation"])
    T[:3, 3] = np.asarray(rec["translation"], dtype=np.float64)
    return T


def load_lidar(path: Path, stamp_ns: int, frame_id: str) -> PointCloud:
    data = read_float32_bin(path, 5)
    pts = np.empty(len(data), LIDAR_DTYPE)
    for i, n in enumerate(("x", "y", "z", "intensity")):
        pts[n] = data[:, i]
    if (data[:, 4] < 0).any() or (data[:, 4] > 65535).any():
        raise SkipFile(path, "ring index outside 0..65535")
    pts["ring"] = data[:, 4].astype(np.uint16)
    return PointCloud(stamp_ns, frame_id, pts)


def load_radar(path: Path, stamp_ns: int, frame_id: str) -> PointCloud:
    from nuscenes.utils.data_classes import RadarPointCloud

    if not path.is_file():
        raise SkipFile(path, "missing")
    keep_all = list(range(18))
    try:
        pc = RadarPointCloud.from_file(str(path), invalid_states=keep_all, dynprop_states=keep_all,
                                       ambig_states=keep_all)
    except Exception as e:  # noqa: BLE001 - the devkit asserts/raises anything on a bad PCD: name the file
        raise SkipFile(path, f"not a readable nuScenes radar PCD: {type(e).__name__}: {e}") from None
    m = pc.points  # (18, N): x y z dyn_prop id rcs vx vy vx_comp vy_comp ... ambig_state ... invalid_state
    if m.shape[0] != 18:
        raise SkipFile(path, f"{m.shape[0]} fields, a nuScenes radar PCD has 18")
    if not np.isfinite(m[:10]).all():
        raise SkipFile(path, "NaN/Inf values")
    x, y = m[0], m[1]
    r = np.hypot(x, y)
    r = np.where(r > 0, r, 1.0)
    pts = np.zeros(m.shape[1], RADAR_DTYPE)
    pts["x"], pts["y"], pts["z"] = x, y, m[2]
    pts["v_r"] = (x * m[6] + y * m[7]) / r
    pts["rcs"] = m[5]
    pts["v_r_comp"] = (x * m[8] + y * m[9]) / r
    pts["dyn_prop"], pts["ambig_state"], pts["invalid_state"] = m[3], m[11], m[14]
    return PointCloud(stamp_ns, frame_id, pts)


def load_image(path: Path, stamp_ns: int, frame_id: str) -> CompressedImage:
    data = read_bytes(path, (JPEG_MAGIC, PNG_MAGIC))
    return CompressedImage(stamp_ns, frame_id, data, image_format(data))


def load_can_imu(path: Path, t0_ns: int, t1_ns: int) -> list[ImuSample]:
    """ms_imu messages within [t0, t1] as ImuSamples; SkipFile when the file is unusable."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SkipFile(path, f"cannot read CAN bus IMU: {e}") from None
    if not isinstance(rows, list):
        raise SkipFile(path, "expected a JSON list of ms_imu messages")
    out: list[ImuSample] = []
    for i, r in enumerate(rows):
        try:
            t = int(r["utime"]) * 1000
            if not t0_ns <= t <= t1_ns:
                continue
            acc = np.asarray(r["linear_accel"], dtype=np.float64).reshape(3)
            gyro = np.asarray(r["rotation_rate"], dtype=np.float64).reshape(3)
            w, x, y, z = (float(v) for v in r["q"])
        except (KeyError, TypeError, ValueError) as e:
            raise SkipFile(path, f"message {i}: {type(e).__name__}: {e}") from None
        if not (np.isfinite(acc).all() and np.isfinite(gyro).all()):
            continue
        q = np.array([x, y, z, w])
        n = float(np.linalg.norm(q))
        out.append(ImuSample(t, "imu_link", gyro, acc, q / n if n > 0.5 else None))
    return out


def convert_nuscenes(
    dataroot: str | Path,
    *,
    version: str = "v1.0-mini",
    scenes: Sequence[str] | None = None,
    classes: Sequence[str] = DEFAULT_CLASSES,
) -> list[ConvertedDrive]:
    """Index nuScenes scenes (all, or those named) into one ConvertedDrive each."""
    NuScenes = load_devkit()
    root = Path(dataroot)
    if not (root / version).is_dir():
        raise ConversionError(f"{root / version}: no such table folder (is --dataroot the nuScenes root and "
                              f"--version e.g. v1.0-mini?)")
    try:
        nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, KeyError, ValueError, OSError, IndexError) as e:
        raise ConversionError(f"{root / version}: the devkit cannot load the tables: {type(e).__name__}: {e}") \
            from None
    by_name = {s["name"]: s for s in nusc.scene}
    names = list(scenes) if scenes else sorted(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConversionError(f"unknown scene(s) {unknown}; {version} has {sorted(by_name)}")
    report = ConversionReport()
    return [_scene_drive(nusc, root, by_name[n], classes, report) for n in names]


def _channel_chain(nusc: Any, first_token: str) -> list[dict[str, Any]]:
    sd = nusc.get("sample_data", first_token)
    while sd["prev"]:
        sd = nusc.get("sample_data", sd["prev"])
    chain = [sd]
    while sd["next"]:
        sd = nusc.get("sample_data", sd["next"])
        chain.append(sd)
    return chain


def _scene_drive(nusc: Any, root: Path, scene: dict[str, Any], classes: Sequence[str],
                 report: ConversionReport) -> ConvertedDrive:
    name = scene["name"]
    first = nusc.get("sample", scene["first_sample_token"])
    refs: list[EventRef] = []
    sensors: dict[str, Any] = {}
    absent: list[str] = []
    lidar_poses: list[tuple[int, np.ndarray]] = []
    for channel, token in sorted(first["data"].items()):
        chain = _channel_chain(nusc, token)
        cs = nusc.get("calibrated_sensor", chain[0]["calibrated_sensor_token"])
        modality = nusc.get("sensor", cs["sensor_token"])["modality"]
        sname = sensor_name(channel)
        frame = f"{sname}_optical" if modality == "camera" else sname
        topic = (f"/sensors/{sname}/image_raw/compressed" if modality == "camera" else f"/sensors/{sname}/points")
        entry: dict[str, Any] = {"modality": modality, "topic": topic, "frame_id": frame,
                                 "rate_hz": RATES_HZ[modality], "extrinsics": extrinsics_entry(record_transform(cs))}
        if modality == "lidar":
            entry["intensity_max"] = NUSCENES_INTENSITY_MAX
        elif modality == "radar":
            entry["rcs_offset_db"] = NUSCENES_RCS_OFFSET_DB
        K = None
        if modality == "camera":
            K = np.asarray(cs["camera_intrinsic"], dtype=np.float64).reshape(3, 3)
            entry["info_topic"] = f"/sensors/{sname}/camera_info"
            entry["intrinsics"] = intrinsics_entry(chain[0]["width"], chain[0]["height"], K)
        sensors[sname] = entry
        present = 0
        for sd in chain:
            if sd["calibrated_sensor_token"] != cs["token"]:
                report.warn(f"sample_data {sd['token']}", f"{channel} calibration changes within {name}; "
                                                          "the rig keeps the first one")
            stamp = int(sd["timestamp"]) * 1000
            path = root / sd["filename"]
            if modality == "lidar":
                lidar_poses.append((stamp, record_transform(nusc.get("ego_pose", sd["ego_pose_token"]))))
            if not path.is_file():
                report.skip(path, f"missing ({channel} of {name})")
                report.count(f"missing_{sname}")
                continue
            present += 1
            src = str(path)
            if modality == "lidar":
                refs.append(EventRef(sname, topic, stamp, stamp, lambda p=path, s=stamp, f=frame: load_lidar(p, s, f),
                                     src))
            elif modality == "radar":
                refs.append(EventRef(sname, topic, stamp, stamp, lambda p=path, s=stamp, f=frame: load_radar(p, s, f),
                                     src))
            else:
                size = (int(sd["width"]), int(sd["height"]))
                refs.append(EventRef(sname, entry["info_topic"], stamp, stamp,
                                     lambda s=stamp, f=frame, k=K, sz=size: CameraInfo(
                                         s, f, CameraIntrinsics(sz[0], sz[1], k.copy(), np.zeros(5), "plumb_bob",
                                                                np.eye(3), np.hstack([k, np.zeros((3, 1))]))),
                                     src))
                refs.append(EventRef(sname, topic, stamp, stamp, lambda p=path, s=stamp, f=frame: load_image(p, s, f),
                                     src))
        if present == 0:
            absent.append(sname)
            report.warn(name, f"sensor {sname} ({channel}) is in the rig but has no data files in this recording")
    _add_odometry(refs, sensors, lidar_poses)
    _add_imu(refs, sensors, root, name, lidar_poses, report)
    gt_stats = _add_ground_truth(nusc, scene, refs, classes, report)
    log = nusc.get("log", scene["log_token"])
    meta = {"dataset": "nuscenes", "version": nusc.version, "scene": name,
            "scene_description": str(scene.get("description", "")), "location": str(log.get("location", "")),
            "timestamps": "recorded (logged at capture time)", "classes": " ".join(classes), **gt_stats}
    comment = (f"Converted from nuScenes {nusc.version} {name} ({log.get('location', '')}). base_link = the nuScenes "
               "ego frame; extrinsics are its calibrated_sensor records.")
    return ConvertedDrive(name, rig_dict(name, sensors, comment), refs, report, meta, absent)


def _add_odometry(refs: list[EventRef], sensors: dict[str, Any], lidar_poses: list[tuple[int, np.ndarray]]) -> None:
    if not lidar_poses:
        return
    lidar_poses.sort(key=lambda p: p[0])
    origin_inv = np.linalg.inv(lidar_poses[0][1])
    odo = odometry_from_poses([t for t, _ in lidar_poses], [origin_inv @ T for _, T in lidar_poses])
    for o in odo:
        refs.append(EventRef("odometry", ODOMETRY_TOPIC, o.stamp_ns, o.stamp_ns, lambda o=o: o, "ego_pose.json"))
    sensors["odometry"] = {"modality": "odometry", "topic": ODOMETRY_TOPIC, "frame_id": "odom",
                           "child_frame_id": "base_link", "rate_hz": RATES_HZ["lidar"],
                           "extrinsics": {"xyz": [0.0, 0.0, 0.0], "rpy": [0.0, 0.0, 0.0]}}


def _add_imu(refs: list[EventRef], sensors: dict[str, Any], root: Path, scene: str,
             lidar_poses: list[tuple[int, np.ndarray]], report: ConversionReport) -> None:
    path = root / "can_bus" / f"{scene}_ms_imu.json"
    if not path.is_file():
        report.warn(path, "no CAN bus IMU for this scene: no /sensors/imu (odometry from ego poses only)")
        return
    t0 = lidar_poses[0][0] - 500_000_000 if lidar_poses else 0
    t1 = lidar_poses[-1][0] + 500_000_000 if lidar_poses else 2**62
    try:
        samples = load_can_imu(path, t0, t1)
    except SkipFile as e:
        report.skip(e.path, e.message)
        return
    if not samples:
        report.warn(path, "no CAN bus IMU message within the scene's time span")
        return
    for s in samples:
        refs.append(EventRef("imu", IMU_TOPIC, s.stamp_ns, s.stamp_ns, lambda s=s: s, str(path)))
    sensors["imu"] = {"modality": "imu", "topic": IMU_TOPIC, "frame_id": "imu_link", "rate_hz": 100.0,
                      "extrinsics": {"xyz": [0.0, 0.0, 0.0], "rpy": [0.0, 0.0, 0.0]}}


def _add_ground_truth(nusc: Any, scene: dict[str, Any], refs: list[EventRef], classes: Sequence[str],
                      report: ConversionReport) -> dict[str, str]:
    n_boxes = n_unknown_vel = 0
    token = scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        token = sample["next"]
        lidar_sd = sample["data"].get("LIDAR_TOP")
        if lidar_sd is None:
            report.skip(f"sample {sample['token']}", "no LIDAR_TOP key frame: ground truth of this sample skipped")
            continue
        ego = record_transform(nusc.get("ego_pose", nusc.get("sample_data", lidar_sd)["ego_pose_token"]))
        ego_inv = np.linalg.inv(ego)
        boxes: list[list[float]] = []
        labels: list[int] = []
        points: list[int] | None = []  # num_lidar_pts + num_radar_pts, what filter_eval_boxes reads
        for ann_token in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            cat = ann["category_name"]
            if cat not in NUSCENES_CATEGORY_MAP:
                report.skip(f"sample_annotation.json {ann_token}", f"unknown category {cat!r}; box skipped")
                continue
            ours = NUSCENES_CATEGORY_MAP[cat]
            if ours is None or ours not in classes:
                continue
            T = np.eye(4)
            T[:3, :3] = wxyz_to_matrix(ann["rotation"])
            T[:3, 3] = ann["translation"]
            in_ego = ego_inv @ T
            w, l, h = (float(v) for v in ann["size"])
            v = np.asarray(nusc.box_velocity(ann_token), dtype=np.float64)
            if not np.isfinite(v).all():
                n_unknown_vel += 1
                v = np.zeros(3)
            v_ego = ego_inv[:3, :3] @ v
            c = in_ego[:3, 3]
            boxes.append([float(c[0]), float(c[1]), float(c[2]), l, w, h, yaw_of(in_ego[:3, :3]),
                          float(v_ego[0]), float(v_ego[1])])
            labels.append(list(classes).index(ours))
            n_lidar, n_radar = ann.get("num_lidar_pts"), ann.get("num_radar_pts")
            if points is not None and isinstance(n_lidar, int) and isinstance(n_radar, int):
                points.append(max(n_lidar, 0) + max(n_radar, 0))
            else:
                points = None  # not annotated: every box will be scored
        stamp = int(sample["timestamp"]) * 1000
        n_boxes += len(boxes)
        refs.append(ground_truth_ref(stamp, stamp, lambda s=stamp, b=boxes, i=labels, n=points:
                                     make_obstacles(s, b, i, n), f"sample {sample['token']}"))
    return {"gt_boxes": str(n_boxes), "gt_velocity_unknown": str(n_unknown_vel),
            "gt_velocity": "from consecutive annotations (0 where unknown)"}


__all__ = ["convert_nuscenes", "load_devkit", "sensor_name"]
