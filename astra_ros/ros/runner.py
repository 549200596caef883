"""Running a node as a process: one ``main`` shape for every astra_ros node."""

from __future__ import annotations

import threading
from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


class BackgroundSpinner:
    """Spins ``node`` (with an executor of its own, in the node's context) in a daemon thread until
    :meth:`stop`, for scripts and tests that publish from their own thread while callbacks run.

    It spins in short ``spin_once`` steps and checks its own stop flag between them, so stopping never
    depends on waking a wait that is blocked inside rclpy (``Executor.shutdown`` racing a wait can
    leave ``spin()`` blocked for good: ros2/rclpy#968), and :meth:`stop` joins the thread before the
    caller destroys nodes that the wait may still be using.
    """

    def __init__(self, node: Node, step_s: float = 0.05) -> None:
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self._step_s = step_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="ros-spinner", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.executor.context.ok():
            self.executor.spin_once(timeout_sec=self._step_s)

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop spinning and shut the executor down; False if the thread did not end within ``timeout_s``."""
        self._stop.set()
        self._thread.join(timeout_s)
        self.executor.shutdown(timeout_sec=timeout_s)
        return not self._thread.is_alive()


class StartupError(RuntimeError):
    """A node cannot start (bad parameter, missing checkpoint, ...): logged as fatal, exit code 1."""


def publish_from_worker(node: Node, publish: Callable[[], None]) -> bool:
    """Run ``publish`` from a worker thread; False, with nothing published, when ROS is shutting down.

    Ctrl-C shuts the context down before the node is destroyed, so a model job that finishes in that
    window would otherwise die publishing into an invalid context. A publish error while the context
    is still valid is a real failure and is raised.
    """
    if not node.context.ok():
        return False
    try:
        publish()
    except Exception:
        if node.context.ok():
            raise
        return False
    return True


def run_node(make_node: Callable[[], Node], make_executor: Callable[[], Executor], name: str,
             args: list[str] | None = None) -> int:
    """Init rclpy, spin the node until Ctrl-C or shutdown, clean up; 0, or 1 when it cannot start."""
    rclpy.init(args=args)
    node = None
    status = 0
    try:
        node = make_node()
        executor = make_executor()
        executor.add_node(node)
        executor.spin()
    except StartupError as error:
        rclpy.logging.get_logger(name).fatal(str(error))
        status = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # Ctrl-C shuts the context down from the signal handler; if that lands while the executor is
        # building its wait set, rclpy raises RCLError ("context is not valid") instead of
        # ExternalShutdownException. That is still a clean stop; an error with the context alive is not.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return status
