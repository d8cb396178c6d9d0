"""Head-output decoding (`core.centerhead.decode`): the 3×3 max-pool for every class vs the
shipped rule (circle NMS for barriers and pedestrians), on one busy synthetic scene.

The scene: 20 cars, 20 pedestrians and two rows of 15 barriers 2 m apart, encoded as
CenterPoint targets, turned into logits with noise so that many cells pass the evaluation
threshold (0.05), the worst case for the greedy NMS loop. Compare the two medians.
"""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core import network_io as nio
from ros_fusion.core.centerhead import decode, encode


@pytest.fixture(scope="module")
def head() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    boxes, labels = [], []
    for _ in range(20):
        boxes.append([*rng.uniform(-45, 45, 2), 0.8, 4.5, 1.9, 1.6, rng.uniform(-3, 3), 0, 0])
        labels.append(nio.CLASSES.index("car"))
        boxes.append([*rng.uniform(-45, 45, 2), 0.9, 0.7, 0.6, 1.8, rng.uniform(-3, 3), 0, 0])
        labels.append(nio.CLASSES.index("pedestrian"))
    for y in (-4.0, 4.0):
        for k in range(15):
            boxes.append([-10.0 + 2.0 * k, y, 0.5, 0.5, 2.0, 1.0, 0.0, 0, 0])
            labels.append(nio.CLASSES.index("barrier"))
    t = encode(np.asarray(boxes), np.asarray(labels))
    p = np.clip(t.heatmap + rng.normal(0, 0.03, t.heatmap.shape), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p)).astype(np.float32), t.regression


def test_decode_max_pool_only(benchmark, head):
    det = benchmark(decode, *head, score_threshold=0.05, dense_nms={})
    assert len(det) > 0


def test_decode_shipped_rule(benchmark, head):
    det = benchmark(decode, *head, score_threshold=0.05)
    assert (det.labels == nio.CLASSES.index("barrier")).sum() >= 25  # the rows survive
