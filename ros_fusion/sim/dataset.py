"""Training data from the simulator: network inputs + CenterPoint targets per LiDAR sweep (docs/DESIGN.md §7).

For every (scenario, seed) a `DriveSimulator` runs; at each LiDAR sweep (time
T = its stamp) the camera image and radar scan the live synchroniser would bundle
(nearest to T + the stream's `sync` offset, within its tolerance: `core.sync`) and the IMU history go
through the SAME `core.preprocess.Preprocessor` the live pipeline uses, and
the ground truth at T through `core.centerhead.encode`. Compensation to T is
`core.compensation` — the code the live pipeline runs — fed with the simulator's
true trajectory (`sim.ego.TrueMotion`) rather than the IMU estimate (the
estimator is evaluated separately, so training data is not tied to its errors):
- LiDAR deskew: each point moved from the sensor pose at its firing time
  (field `t`) into base_link at T; the sweep before (also those the stride skips)
  is deskewed to the same T as the second sweep of the input (`LIDAR_SWEEPS`);
- radar: points moved from base_link at the scan time to base_link at T, Doppler
  compensated with the sensor's true velocity (v_comp = v_r + v_sensor·û);
- camera: pose of base_link at capture relative to base_link at T.
A rig without IMU and odometry gets what its runtime has: no ego-motion (`StaticMotion`, no deskew)
and radar Doppler compensated from each scan's own stationary detections (`core.doppler_ego`, folded
into the rig's `velocity_interval_mps`); a `still_frames` rig gets no previous sweep.
If the rig publishes the camera as JPEG, images take the same JPEG round trip
(quality 90, as the bag writer) so training sees the artefacts the runtime sees.

Shards: one compressed `.npz` per drive, arrays stacked over frames, float16
where the value range makes it lossless for the network (rasters, grid, heatmap),
images as uint8 at network resolution (normalised on load). Each shard is
written with fixed zip timestamps, so the same arguments give byte-identical
files, and `manifest.json` records scenario, seed, split, frame count, sha256
and a hash of everything that shaped the data (rig, network contract, options).
Splits are by seed and must be disjoint: test seeds never reach training.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core import network_io as nio
from ..core.bev import normalised_intensity, radar_rcs_dbsm, tune_allocator
from ..core.camera_lift import normalise_image, resize_image
from ..core.centerhead import Targets, encode_obstacles
from ..core.compensation import StaticMotion, compensate_radar, deskew_lidar
from ..core.doppler_ego import compensate_with_doppler
from ..core.files import sha256_file
from ..core.preprocess import CameraFrame, Preprocessor, SensorFrame, is_previous_sweep
from ..core.rig import Rig, SensorSpec
from ..core.sync import StreamConfig, stream_configs_from_rig
from ..core.types import NS_PER_S, Image, ImuSample, Modality, Obstacles, PointCloud
from .drive import DriveSimulator
from .ego import EgoTrajectory, TrueMotion

#: 2: ground truth carries num_points, targets only for observed objects; 3: two LiDAR sweeps,
#: camera and radar matched like the synchroniser (rig `sync` offsets)
DATASET_VERSION = 3
JPEG_QUALITY = 90  # what ros/image.py's image_to_compressed uses by default
FINALISE_AFTER_S = 0.2  # a sweep is assembled once messages published this long after T have arrived
IMU_HISTORY_S = 1.0
SPLITS = ("train", "val", "test")
ProgressFn = Callable[[int, str], None]


# ----------------------------------------------------------------------------- ego-motion
# Training data is compensated by `core.compensation` — the code the live pipeline runs —
# fed with the simulator's true motion (`sim.ego.TrueMotion`) instead of the IMU estimate.


def _point_times_ns(cloud: PointCloud) -> np.ndarray:
    """Absolute per-point firing times from the simulated sweep's relative `t` field (seconds)."""
    return cloud.stamp_ns + np.rint(np.asarray(cloud.points["t"], np.float64) * NS_PER_S).astype(np.int64)


def jpeg_round_trip(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


# ----------------------------------------------------------------------------- frames of one drive
@dataclass
class DatasetFrame:
    stamp_ns: int
    inputs: nio.NetworkInputs  # images hold the normalised float32 form
    images_u8: np.ndarray  # (n_cameras, CAM_H, CAM_W, 3) uint8, what the shard stores
    gt: Obstacles
    targets: Targets


@dataclass
class _Pending:
    cloud: PointCloud
    prev: PointCloud | None = None  # the sweep before, when it is the previous one (`is_previous_sweep`)


def _matched(buf: deque, t_ns: int, cfg: StreamConfig):
    """The message the synchroniser would bundle at trigger `t_ns`: nearest T + offset within tolerance.

    Training sees the same time offsets as the runtime (a rig whose camera is matched
    ~33 ms in the past trains with cameras ~33 ms in the past), not the nearest message.
    Ties go to the earlier message, as in `core.sync`.
    """
    tau = t_ns + int(cfg.offset_ns)
    best = min(buf, key=lambda m: abs(m.stamp_ns - tau), default=None)
    if best is None or abs(best.stamp_ns - tau) > int(cfg.tolerance):
        return None
    return best


class DriveSamples:
    """Iterates the `DatasetFrame`s of one simulated drive (one per LiDAR sweep, every `stride`-th)."""

    def __init__(self, rig: Rig, scenario: str, seed: int, duration_s: float, stride: int = 1,
                 preprocessor: Preprocessor | None = None, jpeg: bool | None = None) -> None:
        lidars = rig.of(Modality.LIDAR)
        if not lidars:
            raise ValueError(f"rig {rig.name} has no LiDAR: training frames are triggered by LiDAR sweeps")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        tune_allocator()
        self.rig = rig
        self.sim = DriveSimulator(rig, scenario, seed, duration_s)
        self.pre = preprocessor or Preprocessor(rig)
        self.lidar: SensorSpec = lidars[0]
        self.cameras = [rig.sensors[n] for n in self.pre.camera_names]
        self.radars = rig.of(Modality.RADAR)
        self.has_ego_motion = bool(rig.of(Modality.IMU) or rig.of(Modality.ODOMETRY))
        self.stride = int(stride)
        self.sync = {c.name: c for c in stream_configs_from_rig(rig)}
        self.jpeg = {c.name: (c.topic.endswith("/compressed") if jpeg is None else jpeg) for c in self.cameras}

    def __iter__(self) -> Iterator[DatasetFrame]:
        ego = self.sim.world.ego
        imu_spec = self.rig.of(Modality.IMU)
        imu_name = imu_spec[0].name if imu_spec else None
        cams: dict[str, deque] = {c.name: deque(maxlen=32) for c in self.cameras}  # ≥ 0.5 s at 60 Hz
        radars: dict[str, deque] = {r.name: deque(maxlen=32) for r in self.radars}
        imu: deque[ImuSample] = deque(maxlen=int(IMU_HISTORY_S * 400))
        pending: deque[_Pending] = deque()
        gts: dict[int, Obstacles] = {}
        sweep = 0
        last_cloud: PointCloud | None = None
        period_s = self.lidar.period_s
        wait_ns = int(FINALISE_AFTER_S * NS_PER_S)

        def ready(now_ns: int) -> Iterator[DatasetFrame]:
            while pending and (now_ns is None or now_ns - pending[0].cloud.stamp_ns >= wait_ns):
                p = pending.popleft()
                gt = gts.pop(p.cloud.stamp_ns, None)
                if gt is not None:
                    yield self._frame(p.cloud, p.prev, gt, cams, radars, imu, ego)

        for ev in self.sim.events():
            yield from ready(ev.publish_ns)
            if ev.sensor == "ground_truth":
                gts[ev.stamp_ns] = ev.payload
            elif ev.sensor == self.lidar.name:
                if sweep % self.stride == 0:
                    prev = (last_cloud if last_cloud is not None and not self.rig.still_frames
                            and is_previous_sweep(last_cloud.stamp_ns, ev.payload.stamp_ns, period_s) else None)
                    pending.append(_Pending(ev.payload, prev))
                last_cloud = ev.payload  # every sweep, also those the stride skips: it is the next one's previous
                sweep += 1
            elif ev.sensor in cams and isinstance(ev.payload, Image):
                cams[ev.sensor].append(ev.payload)
            elif ev.sensor in radars:
                radars[ev.sensor].append(ev.payload)
            elif ev.sensor == imu_name:
                imu.append(ev.payload)
            if len(gts) > 64:  # sweeps skipped by stride leave their GT behind
                for k in sorted(gts)[:-32]:
                    del gts[k]
        yield from ready(None)

    def _frame(self, cloud: PointCloud, prev: PointCloud | None, gt: Obstacles, cams: dict, radars: dict,
               imu: deque, ego: EgoTrajectory) -> DatasetFrame:
        T = cloud.stamp_ns
        # As the runtime: without an IMU or odometry it has no ego-motion (no deskew, radar compensated
        # from the scan's own Doppler); with one it has an estimate, for which the truth stands in here.
        motion = TrueMotion(ego) if self.has_ego_motion else StaticMotion()
        xyz = deskew_lidar(cloud.xyz(), _point_times_ns(cloud), T, motion, self.lidar.extrinsic)
        prev_xyz = (None if prev is None else
                    deskew_lidar(prev.xyz(), _point_times_ns(prev), T, motion, self.lidar.extrinsic))
        r_xyz, r_rcs, r_v, r_names = [], [], [], []
        for spec in self.radars:
            scan = _matched(radars[spec.name], T, self.sync[spec.name])
            if scan is not None:
                v_r = np.asarray(scan.points["v_r"], np.float64)
                a, c = compensate_radar(scan.xyz(), v_r, scan.stamp_ns, T, motion, spec.extrinsic)
                if not self.has_ego_motion:
                    c = compensate_with_doppler(scan.xyz(), v_r, spec.extrinsic,
                                                interval=spec.velocity_interval_mps)[0]
                r_xyz.append(a)
                r_rcs.append(radar_rcs_dbsm(scan, spec.rcs_offset_db))
                r_v.append(c)
                r_names.append(spec.name)
        camera_frames: list[CameraFrame | None] = []
        small = np.zeros((self.pre.n_cameras, nio.CAM_H, nio.CAM_W, 3), np.uint8)
        for k, spec in enumerate(self.cameras):
            img = _matched(cams[spec.name], T, self.sync[spec.name])
            if img is None or spec.intrinsics is None:
                camera_frames.append(None)
                continue
            data = jpeg_round_trip(img.data) if self.jpeg[spec.name] else img.data
            small[k] = resize_image(data, img.encoding)
            pose = motion.relative_pose(img.stamp_ns, T)  # base_link at capture → at T
            camera_frames.append(CameraFrame(small[k], spec.intrinsics, spec.extrinsic, pose, "rgb8", spec.name))
        frame = SensorFrame(
            stamp_ns=T,
            lidar_xyz=xyz,
            lidar_intensity=normalised_intensity(cloud, self.lidar.intensity_max),
            lidar_prev_xyz=prev_xyz,
            lidar_prev_intensity=None if prev is None else normalised_intensity(prev, self.lidar.intensity_max),
            radar_xyz=np.concatenate(r_xyz) if r_xyz else None,
            radar_rcs=np.concatenate(r_rcs) if r_rcs else None,
            radar_v_comp=np.concatenate(r_v) if r_v else None,
            radar_sensors=r_names,
            cameras=camera_frames,
            imu=list(imu),
        )
        inputs = self.pre.build(frame)
        # Targets only for objects some sensor returned from (mmdet3d's valid_flag on nuScenes):
        # a box behind a wall is not something the network can learn to find.
        return DatasetFrame(T, inputs, small, gt, encode_obstacles(gt.observed(), self.pre.grid))


# ----------------------------------------------------------------------------- shards
#: How each stacked array is stored (dtype on disk); loaders restore float32. Inputs keep their
#: `network_io` names (images as uint8 RGB, channels first, at network resolution); targets are
#: the names `models/train.py` reads; ground truth is a ragged OBSTACLE_FIELDS table + offsets.
STORAGE: dict[str, str] = {
    "lidar_bev": "float16", "radar_bev": "float16", "images": "uint8", "cam_grid": "float16",
    "cam_valid": "uint8", "coverage": "uint8", "present": "uint8", "imu": "float32",
    "heatmap_target": "float16", "reg_target": "float32", "reg_mask": "uint8",
    "stamps": "int64", "gt_table": "float32", "gt_offsets": "int64", "gt_num_points": "int32",
}


def frames_to_arrays(frames: Sequence[DatasetFrame], meta: dict | None = None) -> dict[str, np.ndarray]:
    """Stack frames into the shard layout (`STORAGE`), plus `meta` as a JSON string array."""
    n_cam = frames[0].images_u8.shape[0] if frames else 1
    shapes = {s.name: s.shape for s in nio.input_specs(n_cam)}
    F = (nio.FEAT, nio.FEAT)
    shapes.update({"heatmap_target": (len(nio.CLASSES), *F), "reg_target": (len(nio.REG_CHANNELS), *F),
                   "reg_mask": F})

    def stack(name: str, get) -> np.ndarray:
        if not frames:
            return np.zeros((0, *shapes[name]))
        return np.stack([get(f) for f in frames])

    arrays = {name: stack(name, lambda f, n=name: f.inputs.arrays[n])
              for name in ("lidar_bev", "radar_bev", "cam_grid", "cam_valid", "coverage", "present", "imu")}
    arrays["images"] = stack("images", lambda f: f.images_u8.transpose(0, 3, 1, 2))
    arrays["heatmap_target"] = stack("heatmap_target", lambda f: f.targets.heatmap)
    arrays["reg_target"] = stack("reg_target", lambda f: f.targets.regression)
    arrays["reg_mask"] = stack("reg_mask", lambda f: f.targets.mask)
    arrays["stamps"] = np.array([f.stamp_ns for f in frames], np.int64)
    tables = [f.gt.table() for f in frames]
    arrays["gt_table"] = np.concatenate(tables) if tables else np.zeros((0, 14), np.float32)
    arrays["gt_offsets"] = np.concatenate([[0], np.cumsum([len(t) for t in tables])]).astype(np.int64)
    if frames and all(f.gt.num_points is not None for f in frames):
        arrays["gt_num_points"] = np.concatenate([np.asarray(f.gt.num_points) for f in frames])
    out = {k: np.ascontiguousarray(v.astype(STORAGE[k])) for k, v in arrays.items()}
    out["meta"] = np.array(json.dumps(meta or {}, sort_keys=True))
    return out


def write_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps and order, so equal data → equal bytes."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arrays[name], allow_pickle=False)
            zf.writestr(info, buf.getvalue(), compresslevel=6)
    tmp.replace(path)


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of one shard (as stored; see `frame_inputs` / `frame_targets` for network form)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def frame_inputs(shard: dict[str, np.ndarray], i: int) -> nio.NetworkInputs:
    """Frame `i` of a loaded shard as float32 `NetworkInputs` (images normalised)."""
    a = {k: shard[k][i].astype(np.float32) for k in
         ("lidar_bev", "radar_bev", "cam_grid", "cam_valid", "coverage", "present", "imu")}
    a["images"] = np.stack([normalise_image(im.transpose(1, 2, 0)) for im in shard["images"][i]])
    return nio.NetworkInputs(a)


def frame_targets(shard: dict[str, np.ndarray], i: int) -> Targets:
    return Targets(shard["heatmap_target"][i].astype(np.float32), shard["reg_target"][i].astype(np.float32),
                   shard["reg_mask"][i].astype(np.float32), int(shard["reg_mask"][i].sum()))


def frame_gt(shard: dict[str, np.ndarray], i: int) -> Obstacles:
    """Frame `i`'s ground truth, with num_points where the shard has them (dataset version ≥ 2)."""
    o = shard["gt_offsets"]
    gt = Obstacles.from_table(int(shard["stamps"][i]), "base_link", shard["gt_table"][o[i]:o[i + 1]])
    if "gt_num_points" in shard:
        gt.num_points = shard["gt_num_points"][o[i]:o[i + 1]].astype(np.int32)
    return gt


# ----------------------------------------------------------------------------- whole dataset
def check_splits(splits: dict[str, Sequence[int]]) -> None:
    """Seeds must be non-negative and disjoint between splits (test seeds never in training)."""
    seen: dict[int, str] = {}
    for name, seeds in splits.items():
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r} (one of {SPLITS})")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
                raise ValueError(f"split {name}: seed {s!r} is not a non-negative integer")
            if int(s) in seen and seen[int(s)] != name:
                raise ValueError(f"seed {s} is in both {seen[int(s)]!r} and {name!r}: splits must be disjoint")
            seen[int(s)] = name


def config_hash(rig: Rig, duration_s: float, stride: int) -> tuple[str, dict]:
    """Hash of everything that shapes the samples: rig, network contract, dataset options, format version."""
    cfg = {
        "dataset_version": DATASET_VERSION,
        "rig": rig.to_yaml(),
        "duration_s": float(duration_s),
        "stride": int(stride),
        "grid": [nio.X_RANGE, nio.Y_RANGE, nio.CELL_M, nio.GRID, nio.FEAT],
        "lidar_channels": nio.LIDAR_CHANNELS, "radar_channels": nio.RADAR_CHANNELS,
        "camera": [nio.CAM_H, nio.CAM_W, nio.CAM_MEAN, nio.CAM_STD, nio.CAM_Z_LEVELS],
        "imu": [nio.IMU_WINDOW, nio.IMU_HZ], "classes": nio.CLASSES, "reg": nio.REG_CHANNELS,
        "jpeg_quality": JPEG_QUALITY,
    }
    text = json.dumps(cfg, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16], cfg


def shard_name(split: str, scenario: str, seed: int) -> str:
    """Shard path relative to the dataset folder: `<split>/<scenario>_seed<NNNN>.npz`."""
    return f"{split}/{scenario}_seed{seed:04d}.npz"


def generate_dataset(out_dir: str | Path, rig: Rig, scenarios: Sequence[str], splits: dict[str, Sequence[int]],
                     duration_s: float, stride: int = 1, progress: ProgressFn | None = None,
                     overwrite: bool = False) -> dict:
    """Write one shard per (split, scenario, seed) and `manifest.json`; return the manifest.

    `progress(frames_done, description)` is called after every frame.
    Existing shards with the same config hash are kept (generation is resumable).
    """
    check_splits(splits)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chash, _ = config_hash(rig, duration_s, stride)
    old = {}
    mpath = out / "manifest.json"
    if mpath.exists() and not overwrite:
        prev = json.loads(mpath.read_text())
        if prev.get("config_hash") == chash:
            old = {s["file"]: s for s in prev.get("shards", [])}
    shards = []
    done = 0
    for split in SPLITS:
        for scenario in scenarios:
            for seed in splits.get(split, ()):
                name = shard_name(split, scenario, int(seed))
                path = out / name
                path.parent.mkdir(exist_ok=True)
                if name in old and path.exists() and sha256_file(path) == old[name]["sha256"]:
                    shards.append(old[name])
                    done += old[name]["frames"]
                    if progress:
                        progress(done, f"{split} {scenario} seed {seed} (kept)")
                    continue
                frames = []
                for f in DriveSamples(rig, scenario, int(seed), duration_s, stride):
                    frames.append(f)
                    done += 1
                    if progress:
                        progress(done, f"{split} {scenario} seed {seed}")
                meta = {"scenario": scenario, "seed": int(seed), "split": split, "config_hash": chash,
                        "duration_s": float(duration_s), "stride": int(stride), "rig": rig.name}
                write_npz_deterministic(path, frames_to_arrays(frames, meta))
                shards.append({"file": name, "split": split, "scenario": scenario, "seed": int(seed),
                               "frames": len(frames), "sha256": sha256_file(path),
                               "gt_boxes": int(sum(len(f.gt) for f in frames))})
    return write_manifest(out, chash, shards, {
        "rig": rig.name,
        "duration_s": float(duration_s),
        "stride": int(stride),
        "scenarios": list(scenarios),
        "splits": {k: [int(s) for s in v] for k, v in splits.items()},
    })


def write_manifest(out_dir: Path, config_hash: str, shards: list[dict], fields: dict) -> dict:
    """Write `manifest.json`: what every dataset states (version, config hash, classes, storage, frames
    per split, shards) around the source-specific `fields`; returns it."""
    manifest = {
        "dataset_version": DATASET_VERSION,
        "config_hash": config_hash,
        **fields,
        "classes": list(nio.CLASSES),
        "storage": STORAGE,
        "frames": {s: sum(x["frames"] for x in shards if x["split"] == s) for s in SPLITS},
        "shards": shards,
    }
    (Path(out_dir) / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(out_dir: str | Path) -> dict:
    p = Path(out_dir) / "manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"no dataset manifest at {p} (generate one with `ros-fusion dataset`)")
    m = json.loads(p.read_text())
    for key in ("config_hash", "shards", "splits"):
        if key not in m:
            raise ValueError(f"{p}: not a dataset manifest (missing {key!r})")
    return m


