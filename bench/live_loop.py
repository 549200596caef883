"""The live loop as a planner sees it: real simulator and predictor processes, a separate client.

    python bench/live_loop.py --out bench/results/live_loop.json [--checkpoint default] [--seconds 40]

Starts ``astra-sim-node`` (rover, 128x128 camera at 10 Hz, driving on its own) and ``astra-predictor``
(twist actions from ``/cmd_vel``, ``config/predictor.yaml``'s defaults otherwise) as two processes.
This script's node is the client: it receives every ``~/predicted/frames`` message and reads it against
its own clock when it arrived:

* ``lead_s``: the first frame's time minus the arrival (>= 0: the forecast starts in the future);
* ``coverage_s``: the last frame's time minus the arrival (how far ahead a planner can look);
* ``predictions_per_s``: forecasts received per second.

Phase 1 (``--seconds``) measures these undisturbed. Phase 2 sends the largest ``~/imagine`` request the
node's limits allow by default (``--imagine-batch`` 32 x ``--imagine-horizon`` 16, twist velocities,
``imagine_timeout_s`` raised to 600 s so it runs to the end) and measures the same while it runs, plus
the latency of ``get_parameters`` on the predictor, called every 0.1 s from this client. Writes the
JSON (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # never multicast discovery off this machine
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402

from astra_ros.ros.conversions import stamp_to_ns  # noqa: E402
from astra_ros.ros.runner import BackgroundSpinner  # noqa: E402
from astra_ros.msg import PredictedFrames  # noqa: E402
from astra_ros.srv import Imagine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NODE = "/astra_predictor"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON to write")
    p.add_argument("--checkpoint", default="default", help="'default', a directory or random:<preset>")
    p.add_argument("--seconds", type=float, default=40.0, help="phase 1: undisturbed measurement [s]")
    p.add_argument("--imagine-batch", type=int, default=32)
    p.add_argument("--imagine-horizon", type=int, default=16)
    p.add_argument("--horizon-s", type=float, default=2.0, help="the predictor's horizon_s [s]")
    return p.parse_args(argv)


def summary(arrivals: list[tuple[int, list[int]]]) -> dict:
    """Lead, coverage and rate of forecasts ``(arrival [ns], frame stamps [ns])``."""
    if not arrivals:
        return {"forecasts": 0}
    lead = np.array([(stamps[0] - got) / 1e9 for got, stamps in arrivals])
    cover = np.array([(stamps[-1] - got) / 1e9 for got, stamps in arrivals])
    span = (arrivals[-1][0] - arrivals[0][0]) / 1e9
    return {"forecasts": len(arrivals),
            "lead_s": {"p10": float(np.percentile(lead, 10)), "p50": float(np.median(lead)), "min": float(lead.min())},
            "coverage_s": {"p50": float(np.median(cover)), "min": float(cover.min())},
            "predictions_per_s": (len(arrivals) - 1) / span if span > 0 else None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bin_dir = Path(sys.executable).parent
    logs = Path(tempfile.mkdtemp(prefix="live_loop_"))
    sim = subprocess.Popen([str(bin_dir / "astra-sim-node"), "--ros-args", "-p", "scenario:=rover", "-p", "seed:=9100",
                            "-p", "size:=128x128"], stdout=open(logs / "sim.log", "w"), stderr=subprocess.STDOUT)
    predictor = subprocess.Popen([
        str(bin_dir / "astra-predictor"), "--ros-args", "--params-file", str(REPO / "config" / "predictor.yaml"),
        "-p", f"checkpoint:={args.checkpoint}", "-p", f"horizon_s:={args.horizon_s}", "-p", "imagine_timeout_s:=600.0",
        "-r", "image:=/camera/image_raw", "-r", "twist:=/cmd_vel", "-r", "odom:=/odom",
        "-r", "camera_info:=/camera/camera_info"], stdout=open(logs / "predictor.log", "w"), stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("live_loop_bench")
    lock = threading.Lock()
    arrivals: list[tuple[int, list[int]]] = []

    def on_frames(msg: PredictedFrames) -> None:
        got = node.get_clock().now().nanoseconds
        with lock:
            arrivals.append((got, [stamp_to_ns(s) for s in msg.stamps]))

    node.create_subscription(PredictedFrames, f"{NODE}/predicted/frames", on_frames, 10)
    params = node.create_client(GetParameters, f"{NODE}/get_parameters")
    imagine = node.create_client(Imagine, f"{NODE}/imagine")
    result: dict = {"checkpoint": args.checkpoint, "horizon_s": args.horizon_s, "logs": str(logs)}
    spinner = BackgroundSpinner(node)
    try:
        if True:
            deadline = time.monotonic() + 180
            while not arrivals and time.monotonic() < deadline:
                if predictor.poll() is not None or sim.poll() is not None:
                    raise SystemExit(f"a node exited; logs in {logs}")
                time.sleep(0.2)
            if not arrivals:
                raise SystemExit(f"no forecast within 180 s; logs in {logs}")
            time.sleep(5.0)  # past the first forecasts' warm-up
            with lock:
                arrivals.clear()
            time.sleep(args.seconds)
            with lock:
                result["undisturbed"] = summary(list(arrivals))
                arrivals.clear()
            # Phase 2: the largest ~/imagine request, and get_parameters every 0.1 s meanwhile.
            b, n = args.imagine_batch, args.imagine_horizon
            actions = np.zeros((b, n, 6), np.float32)
            actions[:, :, 0] = np.linspace(0.0, 0.6, b)[:, None]  # [m/s]
            actions[:, :, 5] = np.linspace(-0.8, 0.8, b)[:, None]  # [rad/s]
            request = Imagine.Request(modality="twist", actions=actions.reshape(-1).tolist(), batch=b, horizon=n,
                                      action_dim=6, seed=1)
            assert imagine.wait_for_service(timeout_sec=30.0), "no ~/imagine"
            began = time.monotonic()
            pending = imagine.call_async(request)
            param_ms = []
            while not pending.done() and time.monotonic() - began < 600:
                asked = time.monotonic()
                call = params.call_async(GetParameters.Request(names=["horizon_s"]))
                while not call.done() and time.monotonic() - asked < 10:
                    time.sleep(0.002)
                param_ms.append((time.monotonic() - asked) * 1e3)
                time.sleep(max(0.0, 0.1 - (time.monotonic() - asked)))
            took = time.monotonic() - began
            response = pending.result() if pending.done() else None
            with lock:
                during = summary(list(arrivals))
            result["during_imagine"] = {
                **during, "imagine": {"batch": b, "horizon": n, "seconds": took,
                                      "success": bool(response and response.success),
                                      "message": response.message if response else "no answer"},
                "get_parameters_ms": {"p50": float(np.median(param_ms)), "p99": float(np.percentile(param_ms, 99)),
                                      "max": float(np.max(param_ms)), "calls": len(param_ms)}}
            base = result["undisturbed"].get("predictions_per_s") or 0.0
            rate = during.get("predictions_per_s") or 0.0
            result["during_imagine"]["rate_vs_undisturbed"] = rate / base if base else None
    finally:
        spinner.stop()
        for proc in (predictor, sim):
            if proc.poll() is None:
                proc.send_signal(2)
        for proc in (predictor, sim):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        node.destroy_node()
        rclpy.try_shutdown()
    text = json.dumps(result, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
