"""Ground-truth obstacles in base_link at a given time (docs/DESIGN.md §4/§5)."""

from __future__ import annotations

import numpy as np

from ..core.transforms import wrap_angle
from ..core.types import BOX_DIM, Obstacles
from .world import World

GT_RANGE_M = 60.0


def ground_truth(world: World, t: float, stamp_ns: int, frame_id: str = "base_link",
                 max_range: float = GT_RANGE_M, actor_returns: np.ndarray | None = None) -> Obstacles:
    """Boxes of all actors within `max_range` of base_link, label = class index, score 1, weights 0.

    `actor_returns` (per actor: LiDAR + radar returns when it was observed) becomes
    `num_points`; without it num_points is None (unknown, every box scored).
    """
    st = world.actor_state(t)
    x, y, yaw = (float(v[0]) for v in world.ego.pose(np.array([t])))
    c, s = np.cos(yaw), np.sin(yaw)
    dx, dy = st.centre[:, 0] - x, st.centre[:, 1] - y
    bx, by = c * dx + s * dy, -s * dx + c * dy
    keep = np.flatnonzero(np.hypot(bx, by) <= max_range)
    boxes = np.zeros((len(keep), BOX_DIM), np.float32)
    boxes[:, 0], boxes[:, 1], boxes[:, 2] = bx[keep], by[keep], st.centre[keep, 2]
    boxes[:, 3:6] = world.actors.size[keep]
    boxes[:, 6] = wrap_angle(st.yaw[keep] - yaw)
    vx, vy = st.vel[keep, 0], st.vel[keep, 1]
    boxes[:, 7], boxes[:, 8] = c * vx + s * vy, -s * vx + c * vy
    num_points = None if actor_returns is None else np.asarray(actor_returns)[keep].astype(np.int32)
    return Obstacles(stamp_ns, frame_id, boxes, np.ones(len(keep), np.float32),
                     world.actors.cls[keep].astype(np.int32), np.zeros((len(keep), 3), np.float32), num_points)
