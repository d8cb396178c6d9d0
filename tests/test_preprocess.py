"""One bundle → NetworkInputs: shapes, masks, missing modalities, IMU window."""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core import network_io as nio
from ros_fusion.core.camera_lift import INVALID
from ros_fusion.core.imu_window import imu_window
from ros_fusion.core.preprocess import CameraFrame, Preprocessor, SensorFrame, drop_modalities, is_previous_sweep
from ros_fusion.core.rig import load_rig
from ros_fusion.core.transforms import xyz_rpy_to_transform
from ros_fusion.core.types import ImuSample, RejectedInput
from ros_fusion.paths import default_rig_path

T = 1_700_000_000 * 10**9
CAM, LIDAR, RADAR = 0, 1, 2


@pytest.fixture(scope="module")
def rig():
    return load_rig(default_rig_path())


@pytest.fixture(scope="module")
def pre(rig):
    return Preprocessor(rig)


def imu_samples(n=50, rate=100.0, t_end=T, w=0.1, a=1.0):
    return [ImuSample(int(t_end - (n - 1 - k) * 1e9 / rate), "imu_link", np.array([0, 0, w * k]),
                      np.array([a, 0, 9.81])) for k in range(n)]


def full_frame(rig) -> SensorFrame:
    rng = np.random.default_rng(0)
    cam = rig.sensors["camera_front"]
    pts = np.c_[rng.uniform(-40, 40, 5000), rng.uniform(-40, 40, 5000), rng.uniform(0, 3, 5000)]
    return SensorFrame(
        stamp_ns=T,
        lidar_xyz=pts, lidar_intensity=rng.uniform(0, 1, 5000),
        radar_xyz=np.array([[20.0, 1.0, 0.5], [35.0, -4.0, 0.5]]), radar_rcs=np.array([10.0, 0.0]),
        radar_v_comp=np.array([-5.0, 0.2]),
        cameras=[CameraFrame(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), cam.intrinsics, cam.extrinsic)],
        imu=imu_samples(),
    )


def test_full_bundle_shapes_and_masks(rig, pre) -> None:
    x = pre.build(full_frame(rig))
    x.check(1)  # every input present with the contract's shape and dtype
    a = x.arrays
    assert a["present"].tolist() == [1, 1, 1]
    cov = a["coverage"]
    # camera coverage: the forward frustum only; radar: forward sector; lidar: nearly everything
    cx = -51.2 + (np.arange(64) + 0.5) * 1.6
    assert cov[CAM][cx < 0].sum() == 0 and cov[CAM][cx > 10].mean() > 0.2
    np.testing.assert_array_equal(cov[CAM], (a["cam_valid"][0] > 0).any(axis=0))
    assert cov[RADAR][cx < 0].sum() == 0 and cov[LIDAR].mean() > 0.95
    assert a["lidar_bev"][0].sum() > 0 and np.count_nonzero(a["radar_bev"][0]) == 2
    assert (a["cam_grid"][a["cam_valid"] == 0] == INVALID).all()
    assert a["imu"][-1, 2] == pytest.approx(0.1 * 49, abs=1e-5)


def test_missing_modalities_look_absent(rig, pre) -> None:
    f = full_frame(rig)
    f.cameras = [None]
    f.radar_xyz = None
    x = pre.build(f)
    a = x.arrays
    assert a["present"].tolist() == [0, 1, 0]
    assert not a["coverage"][[CAM, RADAR]].any() and not a["images"].any() and not a["cam_valid"].any()
    assert (a["cam_grid"] == INVALID).all() and not a["radar_bev"].any()
    # drop_modalities makes a full bundle look exactly like the one with sensors missing
    dropped = drop_modalities(pre.build(full_frame(rig)), ["lidar"])
    for k in ("present", "coverage", "images", "cam_grid", "cam_valid", "radar_bev", "lidar_bev"):
        np.testing.assert_array_equal(dropped.arrays[k], a[k], err_msg=k)
    with pytest.raises(ValueError, match="unknown"):
        drop_modalities(x, ["sonar"])


def test_two_lidar_sweeps(rig, pre) -> None:
    """The previous sweep fills the second half of lidar_bev; without one it stays 0 (first sweep, gap)."""
    n = len(nio.LIDAR_SWEEP_CHANNELS)
    assert len(nio.LIDAR_CHANNELS) == n * nio.LIDAR_SWEEPS
    f = full_frame(rig)
    alone = pre.build(f).arrays["lidar_bev"]
    assert alone[:n].any() and not alone[n:].any()
    # the previous sweep: the same scene 1.5 m further back (what a car driving at 15 m/s sees)
    f.lidar_prev_xyz = f.lidar_xyz - np.array([1.5, 0.0, 0.0])
    f.lidar_prev_intensity = f.lidar_intensity
    both = pre.build(f).arrays["lidar_bev"]
    np.testing.assert_array_equal(both[:n], alone[:n])
    np.testing.assert_array_equal(both[n:], pre.grid.lidar_raster(f.lidar_prev_xyz, f.lidar_prev_intensity))
    assert not np.array_equal(both[n:], both[:n])
    # a previous sweep alone does not make the LiDAR present
    f.lidar_xyz = None
    x = pre.build(f).arrays
    assert x["present"][LIDAR] == 0 and not x["lidar_bev"].any()


def test_previous_sweep_rule() -> None:
    ns = 10**9
    assert is_previous_sweep(T - ns // 10, T, 0.1)
    assert is_previous_sweep(T - 15 * ns // 100, T, 0.1)  # up to 1.5 periods
    assert not is_previous_sweep(T - 2 * ns // 10, T, 0.1)  # one sweep dropped in between
    assert not is_previous_sweep(T, T, 0.1) and not is_previous_sweep(T + ns // 10, T, 0.1)


def test_bad_bundles_rejected(rig, pre) -> None:
    f = full_frame(rig)
    f.radar_rcs = None
    with pytest.raises(RejectedInput, match="rcs"):
        pre.build(f)
    f = full_frame(rig)
    f.cameras = [f.cameras[0], f.cameras[0]]
    with pytest.raises(RejectedInput, match="cameras"):
        pre.build(f)
    f = full_frame(rig)
    f.lidar_xyz = np.ones((10, 2))
    with pytest.raises(RejectedInput):
        pre.build(f)


def test_camera_pose_moves_coverage(rig, pre) -> None:
    f = full_frame(rig)
    base = pre.build(f).arrays["coverage"][CAM]
    # captured while the car was 10 m further back: the frustum reaches 10 m less far ahead at T
    f.cameras[0].ego_pose = xyz_rpy_to_transform([-10.0, 0, 0], [0, 0, 0])
    moved = pre.build(f).arrays["coverage"][CAM]
    cx = -51.2 + (np.arange(64) + 0.5) * 1.6
    first = lambda cov: cx[np.flatnonzero(cov.any(axis=1))[0]]  # noqa: E731
    assert first(moved) == pytest.approx(first(base) - 10.0, abs=1.7)


def test_imu_window_resamples_and_rotates() -> None:
    s = imu_samples(n=50, rate=200.0)  # 200 Hz in, IMU_HZ out
    w = imu_window(s, T)
    assert w.shape == (nio.IMU_WINDOW, nio.IMU_CHANNELS) and w.dtype == np.float32
    # gyro z grows by 0.1 per 5 ms sample → 0.2 per 10 ms output step, last row at T
    assert w[-1, 2] == pytest.approx(4.9, abs=1e-5) and np.diff(w[:, 2]) == pytest.approx(0.2, abs=1e-5)
    # samples after T are ignored (no future leakage)
    future = s + [ImuSample(T + 5_000_000, "imu_link", np.array([0, 0, 99.0]), np.zeros(3))]
    np.testing.assert_array_equal(imu_window(future, T), w)
    # mounted rotated 90 deg about z: its x axis is base_link y
    E = xyz_rpy_to_transform([0, 0, 0], [0, 0, np.pi / 2])
    assert imu_window(s, T, E)[-1, 3:] == pytest.approx([0.0, 1.0, 9.81], abs=1e-5)
    # sparse history: rows before the first sample hold it; NaN samples skipped; none → zeros
    short = imu_window(s[-2:], T)
    assert (short[:-2, 2] == short[0, 2]).all()
    bad = [ImuSample(T, "imu_link", np.array([np.nan, 0, 0]), np.zeros(3))]
    assert not imu_window(bad, T).any() and not imu_window([], T).any()


def test_radar_coverage_is_that_of_the_radars_in_the_bundle() -> None:
    """Five radars, the rear two missing: the gate must not trust radar where only the missing ones look."""
    from pathlib import Path

    surround = load_rig(Path(__file__).resolve().parent.parent / "config" / "rig_surround.yaml")
    pre5 = Preprocessor(surround)
    frame = full_frame(surround)
    everyone = pre5.build(frame).arrays["coverage"][RADAR]
    names = sorted(s.name for s in surround.of("radar"))
    frame.radar_sensors = names
    np.testing.assert_array_equal(pre5.build(frame).arrays["coverage"][RADAR], everyone)  # all named = None
    frame.radar_sensors = [n for n in names if not n.startswith("radar_back")]
    without = pre5.build(frame).arrays["coverage"][RADAR]
    lost = everyone - without
    assert lost.min() == 0 and lost.sum() > 0
    i, j = pre5.grid.cell_index(np.array([-30.0]), np.array([0.0]), 2)  # straight behind: only the rear radars
    assert everyone[i[0], j[0]] == 1 and without[i[0], j[0]] == 0
    frame.radar_sensors = ["radar_front"]
    front_only = pre5.build(frame).arrays["coverage"][RADAR]
    np.testing.assert_array_equal(front_only, pre5.grid.sensor_coverage(surround.sensors["radar_front"]))
    frame.radar_sensors = ["radar_roof"]
    with pytest.raises(RejectedInput, match="radar_roof"):
        pre5.build(frame)
    frame.radar_sensors = []
    with pytest.raises(RejectedInput, match="no radar"):
        pre5.build(frame)
    frame.radar_sensors = ["anything"]  # no rig: coverage is everywhere and names are not checked
    assert Preprocessor().build(frame).arrays["coverage"][RADAR].all()
