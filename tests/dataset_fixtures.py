"""Tiny dataset folders written by the tests themselves (no downloads): KITTI, View-of-Delft, nuScenes-mini.

Every fixture starts from known boxes in base_link and writes them the way
the dataset would, using a *different* route from the converters: KITTI
labels are measured from the box's 8 corners after moving them into the
rectified camera frame (bottom face centre, height and heading read off the
corners), nuScenes boxes are composed with the ego pose into global
coordinates. A converter that gets a convention wrong therefore cannot agree
with the truth by repeating the same mistake.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ros_fusion.core.transforms import rot_x, rot_y, rot_z

#: Velodyne (x fwd, y left, z up) → camera (x right, y down, z fwd) axis permutation.
VELO_TO_CAM_AXES = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
#: A KITTI-like P2 (2011_09_26 drive): fx, cx, cy and a non-zero 4th column (camera 2's offset).
KITTI_P2 = np.array([[721.5377, 0.0, 609.5593, 44.85728],
                     [0.0, 721.5377, 172.854, 0.2163791],
                     [0.0, 0.0, 1.0, 0.002745884]])
IMAGE_SIZE = (1242, 375)


@dataclass
class TruthBox:
    cls: str  # dataset class name
    box: np.ndarray  # [x y z l w h yaw] in base_link


def box_corners(box: np.ndarray) -> np.ndarray:
    """(8, 3) corners of an upright box [x y z l w h yaw]; rows 0-3 bottom (front-left, front-right, rear-right,
    rear-left), rows 4-7 the same on top."""
    x, y, z, l, w, h, yaw = (float(v) for v in box[:7])
    local = np.array([[l / 2, w / 2, -h / 2], [l / 2, -w / 2, -h / 2], [-l / 2, -w / 2, -h / 2],
                      [-l / 2, w / 2, -h / 2]])
    local = np.vstack([local, local + [0, 0, h]])
    return local @ rot_z(yaw).T + [x, y, z]


def points_in_box(box: np.ndarray, n: int, rng: np.random.Generator, margin: float = 0.9) -> np.ndarray:
    """(n, 3) base_link points strictly inside the box (within `margin` of each half-extent)."""
    l, w, h, yaw = (float(v) for v in box[3:7])
    u = rng.uniform(-0.5, 0.5, (n, 3)) * margin * np.array([l, w, h])
    return u @ rot_z(yaw).T + box[:3]


def inside(box: np.ndarray, pts: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """Boolean mask of base_link points inside an upright box (tolerance in metres)."""
    d = (pts - box[:3]) @ rot_z(float(box[6]))
    return np.all(np.abs(d) <= np.array(box[3:6]) / 2 + tol, axis=1)


# --------------------------------------------------------------------------- KITTI / VoD


@dataclass
class KittiCalibFixture:
    R0: np.ndarray  # (3, 3)
    Tr: np.ndarray  # (3, 4) velo → cam
    P2: np.ndarray

    @property
    def rect_from_velo(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.R0 @ self.Tr[:, :3]
        T[:3, 3] = self.R0 @ self.Tr[:, 3]
        return T

    def project(self, velo_pts: np.ndarray) -> np.ndarray:
        """The dataset's own projection: P2 · R0_rect · Tr_velo_to_cam · x → (N, 2) pixels."""
        h = np.hstack([velo_pts, np.ones((len(velo_pts), 1))])
        rect = (self.R0 @ (self.Tr @ h.T))
        uvw = self.P2 @ np.vstack([rect, np.ones((1, rect.shape[1]))])
        return (uvw[:2] / uvw[2]).T


def kitti_calib(yaw: float = 0.012) -> KittiCalibFixture:
    """A level LiDAR→rect chain split into a non-trivial R0_rect and Tr_velo_to_cam (like real KITTI files)."""
    rect_from_velo = VELO_TO_CAM_AXES @ rot_z(yaw)
    R0 = rot_x(0.004) @ rot_y(-0.007) @ rot_z(0.003)
    Tr = np.zeros((3, 4))
    Tr[:, :3] = R0.T @ rect_from_velo
    Tr[:, 3] = [-0.00406977, -0.07631618, -0.2717806]
    return KittiCalibFixture(R0, Tr, KITTI_P2.copy())


def write_calib(path: Path, c: KittiCalibFixture, velo_key: str = "Tr_velo_to_cam") -> None:
    def row(a: np.ndarray) -> str:
        return " ".join(repr(float(v)) for v in np.asarray(a).ravel())

    P0 = KITTI_P2.copy()
    P0[:, 3] = 0
    lines = [f"P0: {row(P0)}", f"P1: {row(P0)}", f"P2: {row(c.P2)}", f"P3: {row(c.P2)}",
             f"R0_rect: {row(c.R0)}", f"{velo_key}: {row(c.Tr)}", f"Tr_imu_to_velo: {row(np.eye(4)[:3])}"]
    path.write_text("\n".join(lines) + "\n")


def kitti_label_line(t: TruthBox, c: KittiCalibFixture, lidar_height: float) -> str:
    """The KITTI label of a base_link box, measured from its corners in the rectified camera frame."""
    velo = box_corners(t.box) - [0, 0, lidar_height]
    T = c.rect_from_velo
    rect = velo @ T[:3, :3].T + T[:3, 3]
    bottom, top = rect[:4].mean(axis=0), rect[4:].mean(axis=0)
    front = (rect[0] + rect[1]) / 2
    rear = (rect[2] + rect[3]) / 2
    left = (rect[0] + rect[3]) / 2
    right = (rect[1] + rect[2]) / 2
    d = front - rear
    ry = math.atan2(-d[2], d[0])
    h = float(np.linalg.norm(top - bottom))
    l = float(np.linalg.norm(d))
    w = float(np.linalg.norm(left - right))
    vals = [0.0, 0, -10.0, 100.0, 100.0, 200.0, 200.0, h, w, l, *bottom.tolist(), ry]
    return t.cls + " " + " ".join(repr(float(v)) if isinstance(v, float) else str(v) for v in vals)


def write_png(path: Path, size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> None:
    img = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    path.write_bytes(cv2.imencode(path.suffix, img)[1].tobytes())


KITTI_TRUTH = [
    TruthBox("Car", np.array([12.0, 2.5, 0.78, 3.9, 1.62, 1.56, 0.3])),
    TruthBox("Pedestrian", np.array([7.0, -3.0, 0.88, 0.8, 0.6, 1.76, -2.0])),
    TruthBox("Cyclist", np.array([20.0, -1.0, 0.87, 1.8, 0.6, 1.74, 3.0])),
]


def lidar_points(truth: list[TruthBox], rng: np.random.Generator, per_box: int = 150) -> tuple[np.ndarray, list]:
    """base_link points: `per_box` inside each box + ground clutter; returns (N, 3) and per-box index arrays."""
    pts, idx, n = [], [], 0
    for t in truth:
        p = points_in_box(t.box, per_box, rng)
        pts.append(p)
        idx.append(np.arange(n, n + per_box))
        n += per_box
    ground = np.column_stack([rng.uniform(3, 40, 500), rng.uniform(-15, 15, 500), np.zeros(500)])
    pts.append(ground)
    return np.vstack(pts), idx


def write_kitti(root: Path, *, frames: int = 3, lidar_height: float = 1.73, seed: int = 0,
                truth: list[TruthBox] | None = None) -> dict:
    """``root/training/{velodyne,image_2,calib,label_2}`` with `frames` frames; returns what was written."""
    truth = KITTI_TRUTH if truth is None else truth
    base = root / "training"
    for d in ("velodyne", "image_2", "calib", "label_2"):
        (base / d).mkdir(parents=True, exist_ok=True)
    c = kitti_calib()
    rng = np.random.default_rng(seed)
    written = {"calib": c, "truth": truth, "points": {}, "inside": {}, "lidar_height": lidar_height}
    for i in range(frames):
        name = f"{i:06d}"
        pts, idx = lidar_points(truth, rng)
        velo = pts - [0, 0, lidar_height]
        data = np.column_stack([velo, rng.uniform(0, 1, len(velo))]).astype("<f4")
        data.tofile(base / "velodyne" / f"{name}.bin")
        written["points"][name] = velo
        written["inside"][name] = idx
        write_calib(base / "calib" / f"{name}.txt", c)
        write_png(base / "image_2" / f"{name}.png", seed=i)
        lines = [kitti_label_line(t, c, lidar_height) for t in truth]
        lines.append("DontCare -1 -1 -10 500.0 150.0 540.0 190.0 -1 -1 -1 -1000 -1000 -1000 -10")
        (base / "label_2" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return written


#: A radar mounted in the front bumper: base_link ← radar.
VOD_RADAR_IN_BASE = (np.array([3.6, 0.2, 0.5]), 0.02)


def write_vod(root: Path, *, frames: int = 3, lidar_height: float = 1.6, speed: float = 10.0,
              yaw_rate: float = 0.2, seed: int = 1) -> dict:
    """``root/{lidar,radar}/training/...`` + poses of a car at `speed` m/s turning at `yaw_rate` rad/s."""
    lidar = root / "lidar"
    written = write_kitti(lidar, frames=frames, lidar_height=lidar_height, seed=seed)
    for name in list(written["points"]):  # VoD uses 5-digit frame names and JPEG images
        for sub, ext in (("velodyne", "bin"), ("calib", "txt"), ("label_2", "txt")):
            (lidar / "training" / sub / f"{name}.{ext}").rename(lidar / "training" / sub / f"{name[1:]}.{ext}")
        (lidar / "training" / "image_2" / f"{name}.png").unlink()
        write_png(lidar / "training" / "image_2" / f"{name[1:]}.jpg", seed=int(name))
    c = written["calib"]
    radar = root / "radar" / "training"
    for d in ("velodyne", "calib"):
        (radar / d).mkdir(parents=True, exist_ok=True)
    (lidar / "training" / "pose").mkdir()
    t, yaw = VOD_RADAR_IN_BASE
    base_from_radar = np.eye(4)
    base_from_radar[:3, :3] = rot_z(yaw)
    base_from_radar[:3, 3] = t
    base_from_velo = np.eye(4)
    base_from_velo[2, 3] = lidar_height
    rect_from_base = c.rect_from_velo @ np.linalg.inv(base_from_velo)
    rc = KittiCalibFixture(np.eye(3), (rect_from_base @ base_from_radar)[:3], c.P2)
    rng = np.random.default_rng(seed + 10)
    written["radar_points"] = {}
    written["poses"] = {}
    for i in range(frames):
        name = f"{i:05d}"
        write_calib(radar / "calib" / f"{name}.txt", rc)
        pts = np.vstack([points_in_box(tb.box, 5, rng) for tb in written["truth"]])
        in_radar = (pts - t) @ rot_z(yaw)
        cols = [in_radar, rng.uniform(-10, 10, (len(pts), 1)), rng.uniform(-5, 5, (len(pts), 2)),
                np.zeros((len(pts), 1))]
        np.hstack(cols).astype("<f4").tofile(radar / "velodyne" / f"{name}.bin")
        written["radar_points"][name] = np.hstack(cols)
        th = yaw_rate * 0.1 * i
        # base_link pose in odom: constant speed along a circle arc
        x = speed / yaw_rate * math.sin(th) if yaw_rate else speed * 0.1 * i
        y = speed / yaw_rate * (1 - math.cos(th)) if yaw_rate else 0.0
        odom_from_base = np.eye(4)
        odom_from_base[:3, :3] = rot_z(th)
        odom_from_base[:3, 3] = [x + 100.0, y - 50.0, 2.0]
        odom_from_cam = odom_from_base @ np.linalg.inv(rect_from_base)
        written["poses"][name] = odom_from_base
        lines = [json.dumps({"odomToCamera": odom_from_cam.ravel().tolist()}),
                 json.dumps({"mapToCamera": np.eye(4).ravel().tolist()}),
                 json.dumps({"UTMToCamera": np.eye(4).ravel().tolist()})]
        (lidar / "training" / "pose" / f"{name}.json").write_text("\n".join(lines) + "\n")
    written["radar_calib"] = rc
    written["base_from_radar"] = base_from_radar
    return written


# --------------------------------------------------------------------------- nuScenes-mini


#: Real v1.0-mini calibrated_sensor records (scene-0061's car): translation, rotation (w x y z), intrinsic.
NUSC_SENSORS = {
    "LIDAR_TOP": ("lidar", [0.943713, 0.0, 1.84023],
                  [0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817], []),
    "CAM_FRONT": ("camera", [1.70079118954, 0.0159456324149, 1.51095763913],
                  [0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755],
                  [[1266.417203046554, 0.0, 816.2670197447984], [0.0, 1266.417203046554, 491.50706579294757],
                   [0.0, 0.0, 1.0]]),
    "CAM_FRONT_LEFT": ("camera", [1.52387798135, 0.494631336551, 1.50932822144],
                       [0.6757265034669446, -0.6736266522251881, 0.21214015046209478, -0.21122827103904068],
                       [[1272.5979470598488, 0.0, 826.6154927353808], [0.0, 1272.5979470598488, 479.75165386361925],
                        [0.0, 0.0, 1.0]]),
    "RADAR_FRONT": ("radar", [3.412, 0.0, 0.5], [0.9999984769132877, 0.0, 0.0, 0.0017453283658983088], []),
}
NUSC_T0_US = 1532402927647951
#: Truth in base_link (ego frame) at sample 0: a car seen twice (moves +1.5 m in global x between
#: samples), a pedestrian seen once (velocity unknown), a traffic cone (not one of our classes).
NUSC_TRUTH = [
    TruthBox("vehicle.car", np.array([15.0, 1.0, 0.9, 4.5, 1.9, 1.8, 0.4])),
    TruthBox("human.pedestrian.adult", np.array([8.0, -4.0, 0.85, 0.7, 0.6, 1.7, -1.2])),
    TruthBox("movable_object.trafficcone", np.array([6.0, 3.0, 0.4, 0.4, 0.4, 0.8, 0.0])),
]


def wxyz(R: np.ndarray) -> list[float]:
    from ros_fusion.core.transforms import matrix_to_quat

    x, y, z, w = matrix_to_quat(R)
    return [float(w), float(x), float(y), float(z)]


def nusc_transform(translation, rotation_wxyz) -> np.ndarray:
    from ros_fusion.core.transforms import quat_to_matrix

    w, x, y, z = rotation_wxyz
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix([x, y, z, w])
    T[:3, 3] = translation
    return T


def write_radar_pcd(path: Path, pts: np.ndarray, v: np.ndarray) -> None:
    """A nuScenes radar PCD (18 fields, binary) with points (N, 3) and Doppler vectors (N, 2) (vx, vy)."""
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("dyn_prop", "i1"), ("id", "<i2"), ("rcs", "<f4"),
                   ("vx", "<f4"), ("vy", "<f4"), ("vx_comp", "<f4"), ("vy_comp", "<f4"), ("is_quality_valid", "i1"),
                   ("ambig_state", "i1"), ("x_rms", "i1"), ("y_rms", "i1"), ("invalid_state", "i1"), ("pdh0", "i1"),
                   ("vx_rms", "i1"), ("vy_rms", "i1")])
    rec = np.zeros(len(pts), dt)
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    rec["rcs"] = 5.0
    rec["vx"], rec["vy"] = v[:, 0], v[:, 1]
    rec["vx_comp"], rec["vy_comp"] = v[:, 0] * 0.5, v[:, 1] * 0.5
    rec["ambig_state"], rec["dyn_prop"], rec["invalid_state"] = 3, 1, 0
    header = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
              "FIELDS x y z dyn_prop id rcs vx vy vx_comp vy_comp is_quality_valid ambig_state x_rms y_rms "
              "invalid_state pdh0 vx_rms vy_rms\nSIZE 4 4 4 1 2 4 4 4 4 4 1 1 1 1 1 1 1 1\n"
              "TYPE F F F I I F F F F F I I I I I I I I\nCOUNT 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n"
              f"WIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(pts)}\nDATA binary\n")
    path.write_bytes(header.encode() + rec.tobytes() + b"\n")  # real files end with a newline the devkit expects


def write_nuscenes(root: Path, *, seed: int = 0, can_bus: bool = True, extra_category: str | None = None) -> dict:
    """A v1.0-mini-shaped folder with one scene of 2 samples, loadable by the real `NuScenes` class.

    LIDAR_TOP has a sweep between the key frames; the ego is stationary during
    sample 0 (so LiDAR and camera share one ego pose there) and 2 m further
    along its heading at sample 1. `extra_category` adds a box of that
    category name (to test an unknown class).
    """
    rng = np.random.default_rng(seed)
    tables: dict[str, list[dict]] = {k: [] for k in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map")}
    tok = iter(f"{i:032x}" for i in range(1, 100000))
    log = next(tok)
    tables["log"].append({"token": log, "logfile": "n015-fixture", "vehicle": "n015", "date_captured": "2018-07-24",
                          "location": "singapore-onenorth"})
    (root / "maps").mkdir(parents=True)
    cv2.imwrite(str(root / "maps" / "fixture.png"), np.zeros((4, 4), np.uint8))
    tables["map"].append({"token": next(tok), "log_tokens": [log], "category": "semantic_prior",
                          "filename": "maps/fixture.png"})
    vis = next(tok)
    tables["visibility"].append({"token": vis, "level": "v80-100", "description": "visibility of whole object"})
    tables["attribute"].append({"token": next(tok), "name": "vehicle.moving", "description": "moving"})
    cats = {}
    names = [t.cls for t in NUSC_TRUTH] + ([extra_category] if extra_category else [])
    for n in dict.fromkeys(names):
        cats[n] = next(tok)
        tables["category"].append({"token": cats[n], "name": n, "description": n})
    cs_tok, cs_T = {}, {}
    for ch, (modality, t, q, K) in NUSC_SENSORS.items():
        s = next(tok)
        tables["sensor"].append({"token": s, "channel": ch, "modality": modality})
        cs_tok[ch] = next(tok)
        cs_T[ch] = nusc_transform(t, q)
        tables["calibrated_sensor"].append({"token": cs_tok[ch], "sensor_token": s, "translation": t,
                                            "rotation": q, "camera_intrinsic": K})
    scene = next(tok)
    samples = [next(tok), next(tok)]
    t_us = [NUSC_T0_US, NUSC_T0_US + 500_000]
    ego_yaw = 0.7
    ego_R = rot_z(ego_yaw)
    ego_at = [np.array([411.3, 1180.9, 0.0]), np.array([411.3, 1180.9, 0.0]) + ego_R @ [2.0, 0.0, 0.0]]
    for i, s in enumerate(samples):
        tables["sample"].append({"token": s, "timestamp": t_us[i], "prev": samples[i - 1] if i else "",
                                 "next": samples[i + 1] if i + 1 < len(samples) else "", "scene_token": scene})
    tables["scene"].append({"token": scene, "log_token": log, "nbr_samples": 2, "first_sample_token": samples[0],
                            "last_sample_token": samples[-1], "name": "scene-0001", "description": "fixture"})

    def ego_pose(t: int, pos: np.ndarray) -> str:
        e = next(tok)
        tables["ego_pose"].append({"token": e, "timestamp": t, "rotation": wxyz(ego_R), "translation": pos.tolist()})
        return e

    truth_pts = points_in_box(NUSC_TRUTH[0].box, 200, rng)
    written: dict = {"truth": NUSC_TRUTH, "cs": cs_T, "ego": [], "lidar_points": {}, "files": {}}
    for ch, (modality, *_rest) in NUSC_SENSORS.items():
        # key frame at each sample (+ a LiDAR sweep in between); camera/radar a little after the LiDAR
        offs = {"lidar": 0, "camera": 12_000, "radar": 20_000}[modality]
        times = [t_us[0] + offs, t_us[1] + offs]
        keys = [True, True]
        stoks = [samples[0], samples[1]]
        poses = [ego_at[0], ego_at[1]]
        if modality == "lidar":
            times.insert(1, t_us[0] + 250_000)
            keys.insert(1, False)
            stoks.insert(1, samples[1])
            poses.insert(1, (ego_at[0] + ego_at[1]) / 2)
        sd_toks = [next(tok) for _ in times]
        for j, (t, key, st, pos) in enumerate(zip(times, keys, stoks, poses, strict=True)):
            folder = root / ("samples" if key else "sweeps") / ch
            folder.mkdir(parents=True, exist_ok=True)
            ext = {"lidar": "pcd.bin", "camera": "jpg", "radar": "pcd"}[modality]
            fname = f"n015-fixture__{ch}__{t}.{ext}"
            rel = f"{'samples' if key else 'sweeps'}/{ch}/{fname}"
            if modality == "lidar":
                ground = np.column_stack([rng.uniform(3, 30, 300), rng.uniform(-10, 10, 300), np.zeros(300)])
                base_pts = np.vstack([truth_pts, ground])
                sensor_pts = (base_pts - cs_T[ch][:3, 3]) @ cs_T[ch][:3, :3]
                ring = rng.integers(0, 32, len(sensor_pts))
                np.column_stack([sensor_pts, rng.uniform(0, 100, len(sensor_pts)), ring]).astype("<f4") \
                    .tofile(folder / fname)
                written["lidar_points"][rel] = sensor_pts
            elif modality == "camera":
                img = np.zeros((900, 1600, 3), np.uint8)
                img[:, :, 0] = np.linspace(0, 255, 1600, dtype=np.uint8)[None, :]
                (folder / fname).write_bytes(cv2.imencode(".jpg", img)[1].tobytes())
            else:
                pts = np.column_stack([rng.uniform(5, 50, 20), rng.uniform(-10, 10, 20), np.zeros(20)])
                v = pts[:, :2] / np.linalg.norm(pts[:, :2], axis=1, keepdims=True) * rng.uniform(-5, 5, (20, 1))
                write_radar_pcd(folder / fname, pts, v)
                written.setdefault("radar", {})[rel] = (pts, v)
            written["files"].setdefault(ch, []).append(rel)
            tables["sample_data"].append({
                "token": sd_toks[j], "sample_token": st, "ego_pose_token": ego_pose(t, pos),
                "calibrated_sensor_token": cs_tok[ch], "timestamp": t,
                "fileformat": ext.split(".")[0], "is_key_frame": key,
                "height": 900 if modality == "camera" else 0, "width": 1600 if modality == "camera" else 0,
                "filename": rel, "prev": sd_toks[j - 1] if j else "",
                "next": sd_toks[j + 1] if j + 1 < len(sd_toks) else "",
            })
    written["ego"] = [nusc_transform(ego_at[i], wxyz(ego_R)) for i in range(2)]
    # annotations: global = ego(sample 0) * base_link box; the car moves +1.5 m along global x by sample 1
    boxes = list(NUSC_TRUTH) + ([TruthBox(extra_category, np.array([10.0, 0, 1, 2, 2, 2, 0]))]
                                if extra_category else [])
    for k, tb in enumerate(boxes):
        inst = next(tok)
        G = written["ego"][0] @ nusc_transform(tb.box[:3], wxyz(rot_z(float(tb.box[6]))))
        n_ann = 2 if k == 0 else 1
        ann_toks = [next(tok) for _ in range(n_ann)]
        for a in range(n_ann):
            pos = G[:3, 3] + np.array([1.5 * a, 0.0, 0.0])
            tables["sample_annotation"].append({
                "token": ann_toks[a], "sample_token": samples[a], "instance_token": inst,
                "visibility_token": vis, "attribute_tokens": [], "translation": pos.tolist(),
                "size": [float(tb.box[4]), float(tb.box[3]), float(tb.box[5])], "rotation": wxyz(G[:3, :3]),
                "prev": ann_toks[a - 1] if a else "", "next": ann_toks[a + 1] if a + 1 < n_ann else "",
                "num_lidar_pts": 10, "num_radar_pts": 1,
            })
        tables["instance"].append({"token": inst, "category_token": cats[tb.cls], "nbr_annotations": n_ann,
                                   "first_annotation_token": ann_toks[0], "last_annotation_token": ann_toks[-1]})
    (root / "v1.0-mini").mkdir()
    for name, rows in tables.items():
        (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(rows, indent=1))
    if can_bus:
        (root / "can_bus").mkdir()
        rows = [{"utime": NUSC_T0_US - 100_000 + 10_000 * i, "linear_accel": [0.1, 0.0, 9.81],
                 "q": [1.0, 0.0, 0.0, 0.0], "rotation_rate": [0.0, 0.0, 0.01 * i]} for i in range(80)]
        (root / "can_bus" / "scene-0001_ms_imu.json").write_text(json.dumps(rows))
    written["tables"] = tables
    return written
