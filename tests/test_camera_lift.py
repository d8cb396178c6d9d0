"""Camera→BEV sampling grid and image normalisation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ros_fusion.core import network_io as nio
from ros_fusion.core.bev import BevGrid
from ros_fusion.core.camera_lift import (
    INVALID,
    camera_grid,
    normalise_image,
    pixel_to_grid,
    prepare_image,
    project_points,
    resize_image,
)
from ros_fusion.core.rig import load_rig
from ros_fusion.core.transforms import invert_transform, make_transform, rot_z
from ros_fusion.core.types import CameraIntrinsics, RejectedInput
from ros_fusion.paths import default_rig_path

G = BevGrid()


@pytest.fixture(scope="module")
def cam():
    spec = load_rig(default_rig_path()).sensors["camera_front"]
    return spec.intrinsics, spec.extrinsic


def cell_point(i: int, j: int, k: int) -> np.ndarray:
    cx, cy = G.cell_centres(2)
    return np.array([cx[i, j], cy[i, j], nio.CAM_Z_LEVELS[k]])


def test_projection_agrees_with_opencv(cam) -> None:
    intr, _ = cam
    rng = np.random.default_rng(0)
    p = np.c_[rng.uniform(-4, 4, 200), rng.uniform(-3, 3, 200), rng.uniform(2, 40, 200)]
    uv, valid = project_points(p, intr)
    ref, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), intr.K, intr.D)
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-6)
    assert valid.sum() > 50


def test_grid_point_maps_to_its_pixel(cam) -> None:
    intr, E = cam
    g, valid = camera_grid(intr, E)
    assert g.shape == (len(nio.CAM_Z_LEVELS), 64, 64, 2) and valid.shape == (len(nio.CAM_Z_LEVELS), 64, 64)
    assert g.dtype == np.float32 and valid.dtype == np.float32
    for i, j, k in [(50, 32, 0), (45, 36, 2), (60, 25, 3)]:  # ahead of the car
        p = cell_point(i, j, k)
        pc = p @ invert_transform(E)[:3, :3].T + invert_transform(E)[:3, 3]
        uv, ok = project_points(pc[None], intr)
        assert ok[0] and valid[k, i, j] == 1
        expect = [(uv[0, 0] + 0.5) / intr.width * 2 - 1, (uv[0, 1] + 0.5) / intr.height * 2 - 1]
        assert g[k, i, j] == pytest.approx(expect, abs=1e-5)
    # cell centres left of the car (y > 0) are left in the image (x < 0)
    assert g[0, 50, 33, 0] < 0 < g[0, 50, 30, 0]


def test_known_pixel_without_distortion() -> None:
    # camera at the origin looking along +x (optical z = base x), no distortion
    intr = CameraIntrinsics(640, 480, np.array([[400.0, 0, 319.5], [0, 400.0, 239.5], [0, 0, 1]]), np.zeros(5))
    R = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)  # optical → base
    E = make_transform(R, [0, 0, 0.3])
    g, valid = camera_grid(intr, E)
    cx, cy = G.cell_centres(2)
    i, j, k = 40, 30, 0  # x = 13.6, y = -2.4, z = 0.3 (camera height): v on the centre row
    x, y = cx[i, j], cy[i, j]
    u = 319.5 + 400.0 * (-y) / x
    assert g[k, i, j] == pytest.approx([(u + 0.5) / 640 * 2 - 1, 0.0 + (239.5 + 0.5) / 480 * 2 - 1], abs=1e-6)
    # centre pixel (319.5, 239.5) is normalised (0, 0)
    assert pixel_to_grid(np.array([[319.5, 239.5]]), 640, 480)[0] == pytest.approx([0.0, 0.0])
    # everything behind the camera is invalid and holds INVALID
    behind = cx < 0
    assert not valid[:, behind].any() and (g[:, behind] == INVALID).all()
    assert valid[:, cx > 5].any()


def test_points_behind_and_folded_distortion_invalid() -> None:
    intr = CameraIntrinsics(640, 480, np.array([[400.0, 0, 319.5], [0, 400.0, 239.5], [0, 0, 1]]),
                            np.array([-0.4, 0.0, 0.0, 0.0, 0.0]))
    # behind: z < 0 even though x/z would land mid-image
    _, ok = project_points(np.array([[0.0, 0.0, -5.0], [0.0, 0.0, 5.0]]), intr)
    assert ok.tolist() == [False, True]
    # r*(1 - 0.4 r^2) folds back at r = 0.91: a point at r = 1.5 would map to u ≈ 319.5 - 6 (inside!)
    uv, ok = project_points(np.array([[1.5, 0.0, 1.0]]), intr)
    assert 0 <= uv[0, 0] < 640 and not ok[0]


def test_ego_pose_shifts_the_grid(cam) -> None:
    intr, E = cam
    g0, v0 = camera_grid(intr, E)
    # camera captured 0.1 s before T while driving 10 m/s: base_link at capture is 1 m behind base_link at T
    pose = make_transform(rot_z(0.0), [-1.0, 0.0, 0.0])
    g1, v1 = camera_grid(intr, E, pose)
    # a BEV point at T is 1 m further from the camera at capture: same as the identity grid one metre ahead
    E_shift = make_transform(E[:3, :3], E[:3, 3] + [-1.0, 0, 0])
    g2, _ = camera_grid(intr, E_shift)
    np.testing.assert_allclose(g1, g2, atol=1e-6)
    assert np.abs(g1 - g0)[(v0 > 0) & (v1 > 0)].max() > 1e-3


def test_bad_calibration_rejected(cam) -> None:
    intr, E = cam
    bad = CameraIntrinsics(640, 480, np.diag([0.0, 400.0, 1.0]))
    with pytest.raises(RejectedInput, match="fx"):
        camera_grid(bad, E)
    with pytest.raises(RejectedInput, match="ego_pose"):
        camera_grid(intr, E, np.full((4, 4), np.nan))


def test_image_resize_and_normalise() -> None:
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    small = resize_image(rgb)
    assert small.shape == (nio.CAM_H, nio.CAM_W, 3) and (small[..., 0] == 255).all()
    bgr_small = resize_image(rgb[..., ::-1].copy(), "bgr8")
    np.testing.assert_array_equal(bgr_small, small)
    x = prepare_image(rgb)
    assert x.shape == (3, nio.CAM_H, nio.CAM_W) and x.dtype == np.float32
    assert x[0].mean() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert x[1].mean() == pytest.approx((0 - 0.456) / 0.224, rel=1e-5)
    mono = resize_image(np.full((60, 80), 128, np.uint8), "mono8")
    assert mono.shape == (nio.CAM_H, nio.CAM_W, 3) and (mono == 128).all()
    with pytest.raises(RejectedInput, match="encoding"):
        resize_image(rgb, "yuv422")
    with pytest.raises(RejectedInput):
        resize_image(rgb.astype(np.float32))
    with pytest.raises(RejectedInput):
        normalise_image(rgb)
