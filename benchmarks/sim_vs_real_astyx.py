"""The simulated Astyx rig against the real sensors: radar and LiDAR statistics side by side.

Why: the Astyx 6455 imaging radar has no public datasheet, so the simulator's model of it
(`sim/imaging_radar.py`, parameters in config/rig_astyx_hires2019.yaml) is checked against what the
dataset's TRAINING frames (000000-000339; never the test split) show: detections per scan, how many fall
on the road, elevation spread, detections per labelled car by range, and the LiDAR's point count and
reflectivity. Run: python benchmarks/sim_vs_real_astyx.py --astyx DIR (DIR holds
dataset_astyx_hires2019/, as `fetch` mirrors github:under-the-radar/radar_dataset_astyx).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from ros_fusion.core.rig import load_rig
from ros_fusion.core.types import DEFAULT_CLASSES
from ros_fusion.sim.drive import DriveSimulator

ROOT = Path(__file__).resolve().parent.parent
RIG = ROOT / "config" / "rig_astyx_hires2019.yaml"
TRAIN_FRAMES = range(0, 340)
BANDS = ((0, 10), (10, 20), (20, 30), (30, 50), (50, 80))
#: The 6455 sits ~1.6 m above the road (rig: radar_front z); a detection below this in its frame is road.
ROAD_Z_RADAR = -1.6 + 0.25


def _table(rows: list[tuple[str, str, str]]) -> str:
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{w}}  {b:>22}  {c:>22}" for a, b, c in rows)


def _pct(a: np.ndarray, q: tuple[float, ...]) -> str:
    return " / ".join(f"{v:.1f}" for v in np.percentile(a, q)) if len(a) else "-"


def _band(cars: np.ndarray, lo: float, hi: float) -> str:
    s = cars[(cars[:, 0] >= lo) & (cars[:, 0] < hi), 1] if len(cars) else np.zeros(0)
    return f"{np.median(s):.0f} (n={len(s)})" if len(s) else "-"


def real_stats(root: Path, step: int) -> dict:
    base = root / "dataset_astyx_hires2019"
    n_scan, road, el, per_car, lid_n, lid_i = [], [], [], [], [], []
    for i in TRAIN_FRAMES[::step]:
        a = np.loadtxt(base / "radar_6455" / f"{i:06d}.txt", skiprows=2, ndmin=2)
        xyz = a[:, :3]
        r = np.linalg.norm(xyz, axis=1)
        n_scan.append(len(a))
        road.append(float(np.mean(xyz[:, 2] < ROAD_Z_RADAR)))
        el.append(np.degrees(np.arcsin(xyz[:, 2] / np.maximum(r, 1e-6))))
        for o in json.loads((base / "groundtruth_obj3d" / f"{i:06d}.json").read_text())["objects"]:
            if o["classname"] != "Car":
                continue
            c = np.asarray(o["center3d"], np.float64)
            q = o["orientation_quat"]  # w x y z
            loc = (xyz - c) @ Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()
            half = np.asarray(o["dimension3d"]) / 2 + 0.3
            per_car.append((float(np.hypot(c[0], c[1])), int(np.all(np.abs(loc) <= half, axis=1).sum())))
        lid = np.loadtxt(base / "lidar_vlp16" / f"{i:06d}.txt", skiprows=1, ndmin=2)
        lid_n.append(len(lid))
        lid_i.append(float(np.median(lid[:, 3])))
    return {"scan": np.array(n_scan), "road": np.array(road), "el": np.concatenate(el),
            "car": np.array(per_car), "lid_n": np.array(lid_n), "lid_i": np.array(lid_i)}


def sim_stats(scenario: str, seeds: list[int], duration_s: float = 4.0) -> dict:
    rig = load_rig(RIG)
    rad, lid = rig.sensors["radar_front"], rig.sensors["lidar_top"]
    n_scan, road, el, per_car, lid_n, lid_i = [], [], [], [], [], []
    car = DEFAULT_CLASSES.index("car")
    for seed in seeds:
        sim = DriveSimulator(rig, scenario, seed, duration_s)
        w = sim.world
        for t in np.arange(0.5, duration_s - 0.2, 0.5):
            scan = sim.generate(rad, float(t), 0)[0][1]
            counts = sim._returns[rad.name].copy()
            p = scan.xyz().astype(np.float64)
            r = np.linalg.norm(p, axis=1)
            n_scan.append(len(p))
            road.append(float(np.mean(p[:, 2] < ROAD_Z_RADAR)) if len(p) else 0.0)
            el.append(np.degrees(np.arcsin(p[:, 2] / np.maximum(r, 1e-6))))
            sweep = sim.generate(lid, float(t), 0)[0][1]
            lidar_hits = sim._returns[lid.name]
            lid_n.append(len(sweep.points))
            lid_i.append(float(np.median(sweep.field("intensity"))))
            T = w.ego.world_from_sensor(float(t), rad.extrinsic)[0]
            rel = (w.actor_state(float(t)).centre - T[:3, 3]) @ T[:3, :3]
            az = np.degrees(np.arctan2(rel[:, 1], rel[:, 0]))
            # like a labelled car: in the radar's view and seen by the LiDAR (annotators label what they see)
            for a in np.flatnonzero((w.actors.cls == car) & (np.abs(az) < 55) & (lidar_hits >= 10)):
                per_car.append((float(np.hypot(rel[a, 0], rel[a, 1])), int(counts[a])))
    return {"scan": np.array(n_scan), "road": np.array(road), "el": np.concatenate(el),
            "car": np.array(per_car), "lid_n": np.array(lid_n), "lid_i": np.array(lid_i)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--astyx", type=Path, required=True, help="folder holding dataset_astyx_hires2019/")
    ap.add_argument("--step", type=int, default=5, help="every STEP-th training frame (default: 5)")
    ap.add_argument("--scenario", default="urban", help="simulated scenario (default: urban)")
    ap.add_argument("--seeds", default="11,12,13", help="simulated seeds (default: 11,12,13)")
    args = ap.parse_args()
    real = real_stats(args.astyx, args.step)
    sim = sim_stats(args.scenario, [int(s) for s in args.seeds.split(",")])
    rows = [("", f"real (train, every {args.step})", f"sim ({args.scenario} {args.seeds})"),
            ("radar detections/scan p10/50/90", _pct(real["scan"], (10, 50, 90)), _pct(sim["scan"], (10, 50, 90))),
            ("radar share on the road", f"{real['road'].mean():.2f}", f"{sim['road'].mean():.2f}"),
            ("radar elevation deg p5/50/95", _pct(real["el"], (5, 50, 95)), _pct(sim["el"], (5, 50, 95)))]
    for lo, hi in BANDS:
        rows.append((f"radar detections per car {lo}-{hi} m, median", _band(real["car"], lo, hi),
                     _band(sim["car"], lo, hi)))
    rows += [("LiDAR points/sweep median", f"{np.median(real['lid_n']):.0f}", f"{np.median(sim['lid_n']):.0f}"),
             ("LiDAR reflectivity median", f"{np.median(real['lid_i']):.1f}", f"{np.median(sim['lid_i']):.1f}")]
    print(_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
