"""Running a node as a process: one ``main`` shape for every astra_ros node."""

from __future__ import annotations

import difflib
import os
import sys
import threading
from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node

from astra_ros.ros.parameters import ParamSpec, parameter_usage


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


def _asks_for_help(args: list[str] | None) -> bool:
    """``-h`` / ``--help`` among the arguments before ``--ros-args`` (rclpy would ignore them)."""
    argv = list(sys.argv[1:] if args is None else args)
    if "--ros-args" in argv:
        argv = argv[:argv.index("--ros-args")]
    return "-h" in argv or "--help" in argv


def _warn_about_unknown_parameters(node: Node, parameters: dict[str, ParamSpec] | None) -> None:
    """A ``-p`` or params-file value for a parameter the node does not declare is ignored by rclpy
    without a word; a misspelt name would then silently run with the default."""
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy keeps them there, declared or not
    for unknown in sorted(name for name in overrides if not node.has_parameter(name)):
        close = difflib.get_close_matches(unknown, list(parameters or ()), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        node.get_logger().warning(f"ignoring parameter {unknown!r}: {node.get_name()} has no such parameter{hint}; "
                                  f"--help lists them")


def run_node(make_node: Callable[[], Node], make_executor: Callable[[], Executor], name: str,
             args: list[str] | None = None, usage: str = "",
             parameters: dict[str, ParamSpec] | None = None, exit_at_once_if_not_started: bool = False) -> int:
    """Init rclpy, spin the node until Ctrl-C or shutdown, clean up; 0, or 1 when it cannot start.
    ``-h``/``--help`` prints ``usage`` and the ``parameters`` instead and returns 0.

    ``exit_at_once_if_not_started`` (console scripts, never in-process callers): a node that cannot
    start ends its process with status 1 right after the fatal message, without the rclpy/DDS
    teardown of the half-built node; that teardown was seen to hang (once in ~5 test-suite runs, a
    launch then waits forever on a node that has already said why it failed). Nothing is lost: the
    node never started.
    """
    if _asks_for_help(args):
        print(usage.strip())
        if parameters:
            print(f"\nParameters (--ros-args -p NAME:=VALUE ..., or --ros-args --params-file FILE.yaml):\n"
                  f"{parameter_usage(parameters)}")
        return 0
    try:
        rclpy.init(args=args)
    except _rclpy.RCLError as error:  # e.g. a --params-file that is missing or not YAML
        reason = str(error).splitlines()[0].split(", at /")[0]  # without rcl's source locations
        print(f"[FATAL] [{name}]: cannot start: {reason}", file=sys.stderr)
        return 1
    node = None
    status = 0
    try:
        node = make_node()
        _warn_about_unknown_parameters(node, parameters)
        executor = make_executor()
        executor.add_node(node)
        executor.spin()
    except StartupError as error:
        rclpy.logging.get_logger(name).fatal(str(error))
        status = 1
        if exit_at_once_if_not_started:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
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
