"""A test's own ROS node, spun in the background: what every multi-process ROS test needs once.

Each harness (predictor, faults, planner) subclasses :class:`TestNode` and adds its publishers and
feeding loop; recording topics, waiting, calling services and shutting down are shared here.
Import it only after ``pytest.importorskip("rclpy")``.
"""

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
from node_process import wait_until
from rclpy.qos import QoSProfile

from astra_ros.ros.runner import BackgroundSpinner

try:
    from astra_ros.msg import PredictedFrames
    from astra_ros.srv import Imagine
except ImportError:  # not built: scripts/setup.sh builds it; the tests needing it skip
    PredictedFrames = Imagine = None

RELIABLE = QoSProfile(depth=50)
REPO = Path(__file__).resolve().parents[1]
NODE = "/astra_predictor"  # the predictor's default name


class TestNode:
    """A node in its own context, spun by a daemon thread; ``close`` stops feeding, spinning and the context."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()  # guards every recorded list
        self.stopping = threading.Event()
        self.rng = np.random.default_rng(0)
        self.spinner = BackgroundSpinner(self.node)
        self._loops: list[threading.Thread] = []

    def record(self, msg_type: Any, topic: str, store: list, keep: Callable[[Any], Any] = lambda msg: msg,
               accept: Callable[[Any], bool] = lambda msg: True) -> None:
        """Append ``keep(msg)`` of every message on ``topic`` that ``accept``s to ``store`` (under ``lock``)."""
        def callback(msg: Any) -> None:
            if accept(msg):
                with self.lock:
                    store.append(keep(msg))
        self.node.create_subscription(msg_type, topic, callback, RELIABLE)

    def newest_diagnostics(self, store: list, hardware_id: str = "astra_predictor") -> dict[str, str]:
        """Key/values of the newest DiagnosticArray in ``store`` from ``hardware_id`` (its statuses merged)."""
        with self.lock:
            arrays = [a for a in store if any(s.hardware_id == hardware_id for s in a.status)]
        return {v.key: v.value for s in arrays[-1].status for v in s.values} if arrays else {}

    def start_loop(self, target: Callable[[], None]) -> None:
        """Run ``target`` (which should return once ``stopping`` is set) in a daemon thread."""
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._loops.append(thread)

    def detail(self) -> str:
        """What a timed-out wait reports besides its ``what``; subclasses add their context."""
        return ""

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        wait_until(condition, timeout_s, what, detail=self.detail)

    def call(self, service_type: Any, name: str, request: Any, timeout_s: float = 20.0) -> Any:
        """One service call from a fresh client; the response (AssertionError if nobody answers)."""
        client = self.node.create_client(service_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout_s), f"service {name} not available"
            future = client.call_async(request)
            self.wait_for(future.done, timeout_s, f"a reply from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.stopping.set()
        for thread in self._loops:
            thread.join(2)
        self.spinner.stop()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
