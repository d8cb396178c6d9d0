"""A small observer node for runs driven from the command line (demo, later live evaluation).

It listens to what the node graph reports (`/diagnostics`) and to what the
replay feeds alongside the sensors (ground truth, the rig description), so that
every replayed topic has a subscriber — the replay can then wait for discovery
before publishing and nothing is lost at the start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String

from ..core.events import GROUND_TRUTH_TOPIC, RIG_TOPIC
from ..core.types import Obstacles
from .diagnostics import DiagnosticsListener
from .obstacles import pointcloud2_to_obstacles
from .qos import latched_qos, output_qos


class RunMonitor:
    """Owns an rclpy context + node; call `spin_once` from the caller's loop, `close` at the end."""

    def __init__(self, node_name: str = "ros_fusion_monitor",
                 on_ground_truth: Callable[[bytes], None] | None = None, record_outputs: str | None = None) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(node_name, context=self.context)
        self.diagnostics = DiagnosticsListener(self.node)
        self.rig_yaml: str | None = None
        self._on_gt = on_ground_truth
        self.node.create_subscription(PointCloud2, GROUND_TRUTH_TOPIC, self._gt, output_qos(), raw=True)
        self.node.create_subscription(String, RIG_TOPIC, self._rig, latched_qos())
        # Live evaluation: what fusion_node (named `record_outputs`) published, with local receive times.
        self.outputs: list[tuple[int, Obstacles]] = []
        self.modes: list[tuple[int, str]] = []
        self.ground_truth: list[tuple[int, bytes]] = []
        self._record = record_outputs is not None
        self.output_topics: tuple[str, ...] = ()
        if record_outputs is not None:
            node = record_outputs.strip("/")
            self.output_topics = (f"/{node}/obstacles", f"/{node}/fusion_mode")
            self.node.create_subscription(PointCloud2, self.output_topics[0], self._obstacles, output_qos())
            self.node.create_subscription(String, self.output_topics[1], self._mode, output_qos())
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def _obstacles(self, msg: PointCloud2) -> None:
        try:
            self.outputs.append((time.time_ns(), pointcloud2_to_obstacles(msg)))
        except Exception:  # noqa: BLE001 - a malformed output is counted by its absence in the score
            pass

    def _mode(self, msg: Any) -> None:
        self.modes.append((time.time_ns(), str(msg.data)))

    def _gt(self, data: bytes) -> None:
        if self._record:
            self.ground_truth.append((time.time_ns(), bytes(data)))
        if self._on_gt is not None:
            self._on_gt(data)

    def _rig(self, msg: Any) -> None:
        self.rig_yaml = msg.data

    def spin_once(self, timeout_s: float = 0.1) -> None:
        self.executor.spin_once(timeout_sec=timeout_s)

    def outputs_discovered(self) -> bool:
        """Whether every recorded output topic has a publisher matched to this node (DDS discovery done)."""
        return all(self.node.count_publishers(t) > 0 for t in self.output_topics)

    @property
    def latest(self) -> dict[str, dict[str, Any]]:
        return self.diagnostics.latest

    @property
    def arrays_received(self) -> int:
        return self.diagnostics.arrays_received

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
