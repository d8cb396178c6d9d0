"""Triangle meshes of oriented boxes and prisms, vectorised over many objects.

Every object of the world is a box (vehicles, people, buildings, walls,
barriers, canopies) or an 8-sided prism (poles, trunks); merged into one mesh
per ray-casting scene with a triangle → object map, so a hit knows its owner.
Triangles wind counter-clockwise seen from outside (outward normals).
"""

from __future__ import annotations

import numpy as np

_BOX_CORNERS = np.array(
    [[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1], [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]],
    np.float64,
) * 0.5
_BOX_TRIS = np.array(
    [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
     [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]],
    np.int64,
)


def _place(local: np.ndarray, centre: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    out = np.empty_like(local)
    out[..., 0] = c * local[..., 0] - s * local[..., 1] + centre[:, None, 0]
    out[..., 1] = s * local[..., 0] + c * local[..., 1] + centre[:, None, 1]
    out[..., 2] = local[..., 2] + centre[:, None, 2]
    return out


def boxes(centre: np.ndarray, size: np.ndarray, yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M boxes (centre (M,3), size (M,3) = l,w,h, yaw (M,)) → vertices (M*8,3), triangles (M*12,3)."""
    m = len(centre)
    local = _BOX_CORNERS[None] * size[:, None, :]
    v = _place(local, centre, yaw).reshape(-1, 3)
    f = (_BOX_TRIS[None] + 8 * np.arange(m)[:, None, None]).reshape(-1, 3)
    return v, f


def _prism_template(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    a = 2 * np.pi * np.arange(n) / n
    ring = np.stack([np.cos(a), np.sin(a)], 1)
    v = np.concatenate([np.c_[ring, np.full(n, -0.5)], np.c_[ring, np.full(n, 0.5)]])
    tris = []
    for i in range(n):
        j = (i + 1) % n
        tris += [[i, j, n + j], [i, n + j, n + i]]
    for i in range(1, n - 1):
        tris += [[0, i + 1, i], [n, n + i, n + i + 1]]
    return v, np.array(tris, np.int64)


_PRISM_V, _PRISM_T = _prism_template()


def prisms(centre: np.ndarray, radius: np.ndarray, height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M vertical 8-sided prisms → vertices (M*16,3), triangles (M*28,3)."""
    m = len(centre)
    local = _PRISM_V[None] * np.stack([radius, radius, height], 1)[:, None, :]
    v = _place(local, centre, np.zeros(m)).reshape(-1, 3)
    f = (_PRISM_T[None] + len(_PRISM_V) * np.arange(m)[:, None, None]).reshape(-1, 3)
    return v, f


BOX_TRIS = len(_BOX_TRIS)
PRISM_TRIS = len(_PRISM_T)
