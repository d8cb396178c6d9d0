"""Obstacles table PointCloud2 and MarkerArray."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import PointField
from visualization_msgs.msg import Marker

from ros_fusion.core.types import DEFAULT_CLASSES, OBSTACLE_FIELDS, Obstacles, RejectedInput
from ros_fusion.ros.obstacles import box_edges, obstacles_to_markers, obstacles_to_pointcloud2, pointcloud2_to_obstacles
from ros_fusion.ros.pointcloud import make_pointcloud2


def _obstacles(n: int, seed: int = 0) -> Obstacles:
    rng = np.random.default_rng(seed)
    boxes = np.column_stack([
        rng.uniform(-50, 50, (n, 3)), rng.uniform(0.5, 12, (n, 3)), rng.uniform(-np.pi, np.pi, n),
        rng.uniform(-15, 15, (n, 2)),
    ]).astype(np.float32)
    return Obstacles(
        1_700_000_000_000_000_000, "base_link", boxes, rng.random(n).astype(np.float32),
        rng.integers(0, len(DEFAULT_CLASSES), n).astype(np.int32), rng.dirichlet([1, 1, 1], n).astype(np.float32),
    )


def test_table_layout_is_packed_float32_in_obstacle_fields_order():
    msg = obstacles_to_pointcloud2(_obstacles(3))
    assert [f.name for f in msg.fields] == list(OBSTACLE_FIELDS)
    assert all(f.datatype == PointField.FLOAT32 and f.count == 1 for f in msg.fields)
    assert [f.offset for f in msg.fields] == [4 * i for i in range(len(OBSTACLE_FIELDS))]
    assert msg.point_step == 4 * len(OBSTACLE_FIELDS) and msg.width == 3 and msg.height == 1
    first_row = np.frombuffer(msg.data, np.float32, count=len(OBSTACLE_FIELDS))
    np.testing.assert_array_equal(first_row, _obstacles(3).table()[0])


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 40), st.integers(0, 2**31))
def test_table_round_trip(n, seed):
    obs = _obstacles(n, seed)
    back = pointcloud2_to_obstacles(obstacles_to_pointcloud2(obs))
    assert (back.stamp_ns, back.frame_id, len(back)) == (obs.stamp_ns, obs.frame_id, n)
    np.testing.assert_array_equal(back.boxes, obs.boxes)
    np.testing.assert_array_equal(back.scores, obs.scores)
    np.testing.assert_array_equal(back.labels, obs.labels)
    np.testing.assert_array_equal(back.weights, obs.weights)


def test_table_reader_accepts_other_orders_types_and_extra_fields():
    obs = _obstacles(4)
    names = list(reversed(OBSTACLE_FIELDS)) + ["track_id"]
    rows = np.zeros(4, dtype=[(n, "<f8" if n != "label" else "<u1") for n in names])
    for i, n in enumerate(OBSTACLE_FIELDS):
        rows[n] = obs.table()[:, i]
    rows["track_id"] = 7
    back = pointcloud2_to_obstacles(make_pointcloud2(obs.stamp_ns, "base_link", rows))
    np.testing.assert_array_equal(back.table(), obs.table())


def _markers_by(markers, ns: str) -> list[Marker]:
    return [m for m in markers if m.ns == ns]


def test_markers_one_box_and_label_per_obstacle_arrow_only_when_moving():
    obs = _obstacles(5)
    obs.boxes[:, 7:9] = [[0, 0], [0.1, 0.1], [3, 0], [0, -0.5], [0.15, 0]]
    arr = obstacles_to_markers(obs, DEFAULT_CLASSES, mode="intermediate", lifetime_s=0.5).markers
    assert arr[0].action == Marker.DELETEALL
    boxes, labels = _markers_by(arr, "ros_fusion/box"), _markers_by(arr, "ros_fusion/label")
    arrows = _markers_by(arr, "ros_fusion/velocity")
    assert len(arr) == 1 + len(boxes) + len(labels) + len(arrows)
    assert [m.id for m in boxes] == list(range(5)) and len(labels) == 5
    assert sorted(m.id for m in arrows) == [2, 3]
    for m in boxes:
        assert m.type == Marker.LINE_LIST and len(m.points) == 24
        assert m.header.frame_id == "base_link" and m.lifetime.nanosec == 500_000_000
        pts = np.array([[p.x, p.y, p.z] for p in m.points])
        np.testing.assert_allclose(pts, box_edges(obs.boxes[m.id]), atol=1e-9)
        centre = pts.mean(axis=0)
        np.testing.assert_allclose(centre, obs.boxes[m.id, :3], atol=1e-3)
    for m in labels:
        assert m.type == Marker.TEXT_VIEW_FACING
        assert m.text == f"{DEFAULT_CLASSES[obs.labels[m.id]]} {obs.scores[m.id]:.2f}"
    tip = arrows[0].points[1]
    i = arrows[0].id
    assert (tip.x - obs.boxes[i, 0], tip.y - obs.boxes[i, 1]) == pytest.approx(tuple(obs.boxes[i, 7:9]), abs=1e-4)


def test_box_edges_are_the_12_edges_of_the_rotated_box():
    box = np.array([1.0, 2.0, 0.5, 4.0, 2.0, 1.5, np.pi / 2, 0, 0])
    edges = box_edges(box).reshape(12, 2, 3)
    lengths = sorted(np.round(np.linalg.norm(edges[:, 0] - edges[:, 1], axis=1), 9))
    assert lengths == [1.5] * 4 + [2.0] * 4 + [4.0] * 4
    long_edge = next(e for e in edges if np.isclose(np.linalg.norm(e[0] - e[1]), 4.0))
    direction = (long_edge[1] - long_edge[0]) / 4.0
    np.testing.assert_allclose(np.abs(direction), [0, 1, 0], atol=1e-9)  # yaw 90°: length along +y


def test_colours_by_class_and_mode_and_unknown_labels():
    obs = _obstacles(2)
    obs.labels[:] = [0, 99]
    normal = obstacles_to_markers(obs, DEFAULT_CLASSES).markers
    late = obstacles_to_markers(obs, DEFAULT_CLASSES, mode="late").markers
    none = obstacles_to_markers(obs, DEFAULT_CLASSES, mode="none").markers
    c = [(m.color.r, m.color.g, m.color.b, m.color.a) for m in _markers_by(normal, "ros_fusion/box")]
    assert c[0] != c[1]
    c_late = _markers_by(late, "ros_fusion/box")[0].color
    assert (c_late.r, c_late.g, c_late.b) != c[0][:3]
    c_none = _markers_by(none, "ros_fusion/box")[0].color
    assert c_none.r == c_none.g == c_none.b and c_none.a < c[0][3]
    assert _markers_by(normal, "ros_fusion/label")[1].text.startswith("class_99 ")


def test_empty_obstacles_give_only_deleteall():
    arr = obstacles_to_markers(Obstacles.empty(0), DEFAULT_CLASSES).markers
    assert len(arr) == 1 and arr[0].action == Marker.DELETEALL
    assert len(pointcloud2_to_obstacles(obstacles_to_pointcloud2(Obstacles.empty(5)))) == 0


def test_ground_truth_num_points_column_round_trips_and_is_checked():
    gt = _obstacles(4, seed=3)
    assert pointcloud2_to_obstacles(obstacles_to_pointcloud2(gt)).num_points is None  # detections: no column
    gt.num_points = np.array([0, 7, 1200, 3], np.int32)
    msg = obstacles_to_pointcloud2(gt)
    assert [f.name for f in msg.fields] == [*OBSTACLE_FIELDS, "num_points"]
    back = pointcloud2_to_obstacles(msg)
    np.testing.assert_array_equal(back.num_points, gt.num_points)
    np.testing.assert_array_equal(back.table(), gt.table())
    gt.num_points = np.array([0, -1, 2, 3], np.int32)
    with pytest.raises(RejectedInput, match="num_points"):
        pointcloud2_to_obstacles(obstacles_to_pointcloud2(gt))
