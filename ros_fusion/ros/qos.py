"""QoS profiles of ros_fusion, one definition each (docs/DESIGN.md §5).

Why these: sensor streams are high-rate and only the newest sample matters, so
subscriptions are BEST_EFFORT with a small KEEP_LAST depth — a best-effort
subscription also matches both reliable and best-effort publishers, so any
driver or `ros2 bag play` connects. Outputs are RELIABLE so planners and
recorders do not lose detections. `/rig` is published once and latched
(TRANSIENT_LOCAL) so a late subscriber still learns the rig.
"""

from __future__ import annotations

import math

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR_DEPTH = 5
#: Seconds of a sensor's messages its subscription queue holds (see `sensor_depth`).
SENSOR_QUEUE_S = 0.5
OUTPUT_DEPTH = 10


def sensor_qos(depth: int = SENSOR_DEPTH) -> QoSProfile:
    """Subscriptions to sensor data: best effort, keep last `depth`, volatile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def sensor_depth(rate_hz: float, seconds: float = SENSOR_QUEUE_S) -> int:
    """Queue depth that holds `seconds` of a `rate_hz` stream, at least `SENSOR_DEPTH`.

    Why by time, not count: a best-effort KEEP_LAST queue that is full drops its oldest
    message without any event, so the node never counts it. Depth 5 was 50 ms of a 100 Hz
    IMU — less than the executor's worst delay on a loaded 2-core machine (IMU age p99
    42.6 ms measured in the demo), and the demo lost 8 of 600 IMU messages in about one run
    in ten. 0.5 s gives IMU 50, odometry 25, camera 8, radar 7, LiDAR 5.
    """
    if not rate_hz > 0:
        return SENSOR_DEPTH
    return max(SENSOR_DEPTH, math.ceil(rate_hz * seconds))


def output_qos(depth: int = OUTPUT_DEPTH) -> QoSProfile:
    """Published results (obstacles, markers, diagnostics): reliable, keep last `depth`, volatile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    """`/rig` and other publish-once data: reliable, transient local, keep last 1."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
