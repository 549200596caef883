"""``astra-demo``: the whole system on one machine, no robot needed.

Starts the simulator node (``astra_sim``, rover) and the predictor (``astra_predictor``) as their
own processes, drives the simulated robot along a scripted path on ``/cmd_vel``, records what the
camera really showed and what the predictor said it would show, and saves both side by side
as a PNG strip together with the measured prediction latency.

    astra-demo --checkpoint default --seconds 20 --out out/demo.png

DDS discovery is kept on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) on a
domain of the demo's own (``--domain-id``; by default a random one in 1-101, never the caller's
``ROS_DOMAIN_ID``, which may belong to nodes the demo's ``/cmd_vel`` must not drive). Domains
above 101 are avoided: their DDS ports fall into Linux's ephemeral port range.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from astra_ros.cli.arguments import IMAGE_SUFFIXES, check_output_file, non_negative_int, positive_float

# Largest domain whose Fast DDS ports (7400 + 250 x domain + up to 11) stay below the ephemeral range (32768).
MAX_SAFE_DOMAIN_ID = 101
# How long to wait for the predictor's first prediction after the first camera image [s].
PREDICTOR_START_TIMEOUT_S = 120.0
# Scripted path: (seconds, forward speed [m/s], yaw rate [rad/s]).
PATH_SCRIPT = [(2.0, 0.0, 0.0), (4.0, 0.35, 0.0), (4.0, 0.2, 0.5), (4.0, 0.35, 0.0), (4.0, 0.2, -0.5), (2.0, 0.0, 0.0)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="astra-demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="default", help="'default', a checkpoint directory or random:<preset>")
    p.add_argument("--seconds", type=positive_float, default=20.0, help="how long to drive, from the first prediction [s]")
    p.add_argument("--seed", type=non_negative_int, default=9000,
                   help="simulator scene seed (9000+ are not in the training set)")
    p.add_argument("--horizon-s", type=positive_float, default=2.0,
                   help="each forecast covers at least this long after its publication [s]")
    p.add_argument("--publish-rate", type=positive_float, default=10.0, help="at most this many forecasts per second [Hz]")
    p.add_argument("--out", type=Path, default=Path("out/demo.png"),
                   help="image strip to write, .png or .jpg (and a .json beside it)")
    p.add_argument("--domain-id", type=int, default=None,
                   help=f"ROS_DOMAIN_ID of the demo's nodes (0-{MAX_SAFE_DOMAIN_ID}; default: a random one in 1-{MAX_SAFE_DOMAIN_ID})")
    args = p.parse_args(argv)
    if args.domain_id is not None and not 0 <= args.domain_id <= MAX_SAFE_DOMAIN_ID:
        p.error(f"--domain-id must be in 0-{MAX_SAFE_DOMAIN_ID} (higher domains use ephemeral ports), got {args.domain_id}")
    check_output_file(p, args.out, IMAGE_SUFFIXES)  # before the drive, not after it
    return args


def _ros_environment(domain_id: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # never multicast discovery off this machine
    env["ROS_DOMAIN_ID"] = str(random.randint(1, MAX_SAFE_DOMAIN_ID) if domain_id is None else domain_id)
    env.setdefault("MUJOCO_GL", "egl")
    return env


class ChildExited(RuntimeError):
    """A node the demo started has exited before the demo stopped it; the message holds its log's tail."""


def _check_children(procs: list[tuple[str, subprocess.Popen]], logs: Path) -> None:
    for name, proc in procs:
        if proc.poll() is not None:
            tail = (logs / f"{name}.log").read_text(errors="replace")[-2000:]
            raise ChildExited(f"the {name} node exited (code {proc.returncode}):\n{tail}")


def _executable(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"astra-demo: cannot find the '{name}' console script; run scripts/setup.sh first")
    return found


@dataclass
class Recording:
    camera: dict[int, np.ndarray] = field(default_factory=dict)  # stamp [ns] -> rgb
    predictions: list[dict] = field(default_factory=list)  # observed stamp, frame stamps, frames, age


def _nearest(frames: dict[int, np.ndarray], stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
    if not frames:
        return None
    best = min(frames, key=lambda s: abs(s - stamp_ns))
    return frames[best] if abs(best - stamp_ns) <= tolerance_ns else None


def _drive_and_record(args: argparse.Namespace, check_children) -> tuple[Recording, list[float]]:
    """Drive the script and record; ``check_children()`` raises :class:`ChildExited` if a node died."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node("astra_demo")
    try:
        return _drive(args, check_children, node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _drive(args: argparse.Namespace, check_children, node) -> tuple[Recording, list[float]]:
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Twist
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from astra_ros.ros.conversions import image_msg_to_rgb, stamp_to_ns
    from astra_ros.msg import PredictedFrames

    rec = Recording()
    model_latency: list[float] = []
    cmd = node.create_publisher(Twist, "/cmd_vel", 10)

    def on_camera(msg: Image) -> None:
        rec.camera[stamp_to_ns(msg.header.stamp)] = image_msg_to_rgb(msg)

    def on_prediction(msg: PredictedFrames) -> None:
        received_ns = node.get_clock().now().nanoseconds  # the client's clock, as a planner would read it
        stamps = [stamp_to_ns(s) for s in msg.stamps]
        rec.predictions.append({
            "observed_ns": stamp_to_ns(msg.observed_stamp),
            "received_ns": received_ns,
            "stamps_ns": stamps,
            "frames": [image_msg_to_rgb(f) for f in msg.frames],
            "lead_s": (stamps[0] - received_ns) / 1e9,  # the first frame shows this long after it arrived
            "coverage_s": (stamps[-1] - received_ns) / 1e9,
        })

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            for kv in status.values:
                # Every prediction's latency once (latency_last_s is a 1 Hz sample of them).
                if kv.key == "latency_new_ms" and kv.value:
                    model_latency.extend(float(ms) / 1e3 for ms in kv.value.split(","))

    node.create_subscription(Image, "/camera/image_raw", on_camera, qos_profile_sensor_data)
    node.create_subscription(PredictedFrames, "/astra_predictor/predicted/frames", on_prediction, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def publish_and_spin(msg: Twist) -> None:
        # One 10 Hz command tick; callbacks (camera, predictions) run meanwhile.
        check_children()
        cmd.publish(msg)
        end = time.monotonic() + 0.1
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.02)

    scale = args.seconds / sum(seconds for seconds, _, _ in PATH_SCRIPT)
    # Wait (bounded) for the simulator's first image: discovery takes up to a few seconds.
    deadline = time.monotonic() + 30.0
    while not rec.camera and time.monotonic() < deadline:
        check_children()
        executor.spin_once(timeout_sec=0.1)
    if not rec.camera:
        raise SystemExit("astra-demo: no image from the simulator node within 30 s")
    # The drive's window starts at the predictor's first prediction, not at launch: loading the model
    # takes from one second (idle machine) to tens (busy cores), and a window counted from launch
    # could end before the predictor said anything. Standing still meanwhile fills its history.
    print("astra-demo: waiting for the predictor's first prediction ...", flush=True)
    deadline = time.monotonic() + PREDICTOR_START_TIMEOUT_S
    while not rec.predictions and time.monotonic() < deadline:
        publish_and_spin(Twist())
    if not rec.predictions:
        raise SystemExit(f"astra-demo: no prediction from the predictor within {PREDICTOR_START_TIMEOUT_S:.0f} s "
                         "of the first camera image; see its log")
    print(f"astra-demo: predictor ready; driving for {args.seconds:g} s", flush=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        elapsed = (time.monotonic() - t0) / scale
        speed, yaw = 0.0, 0.0
        for seconds, v, w in PATH_SCRIPT:
            if elapsed < seconds:
                speed, yaw = v, w
                break
            elapsed -= seconds
        msg = Twist()
        msg.linear.x, msg.angular.z = speed, yaw
        publish_and_spin(msg)
    cmd.publish(Twist())
    return rec, model_latency


def _strip(rec: Recording, rows: int, tolerance_ns: int):
    from PIL import Image, ImageDraw

    usable = [p for p in rec.predictions if any(_nearest(rec.camera, s, tolerance_ns) is not None for s in p["stamps_ns"])]
    chosen = [usable[i] for i in np.linspace(0, len(usable) - 1, min(rows, len(usable))).round().astype(int)] if usable else []
    if not chosen:
        return None
    h, w = chosen[0]["frames"][0].shape[:2]
    h, w = max(h, 64), max(w, 64)
    shown = 8  # forecast frames per row, evenly spread over the forecast
    cols = 1 + min(shown, max(len(p["frames"]) for p in chosen))
    label_w = 110
    t0 = min(rec.camera)
    canvas = Image.new("RGB", (label_w + cols * (w + 2), len(chosen) * 2 * (h + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, pred in enumerate(chosen):
        y_pred, y_real = r * 2 * (h + 2), r * 2 * (h + 2) + h + 2
        t_obs, t_got = pred["observed_ns"], pred["received_ns"]
        draw.text((4, y_pred + 4), f"forecast\nreceived\nt={(t_got - t0) / 1e9:.2f}s\n(last seen\nt={(t_obs - t0) / 1e9:.2f}s)",
                  fill="black")
        draw.text((4, y_real + 4), "real", fill="black")
        observed = _nearest(rec.camera, t_obs, tolerance_ns)
        if observed is not None:  # the newest frame the forecast was made from
            tile = Image.fromarray(observed).resize((w, h))
            canvas.paste(tile, (label_w, y_pred))
            canvas.paste(tile, (label_w, y_real))
        picks = np.unique(np.linspace(0, len(pred["frames"]) - 1, min(shown, len(pred["frames"]))).round().astype(int))
        for i, k in enumerate(picks):
            frame, stamp = pred["frames"][k], pred["stamps_ns"][k]
            x = label_w + (i + 1) * (w + 2)
            canvas.paste(Image.fromarray(frame).resize((w, h)), (x, y_pred))
            # How far after its arrival each frame's time lies: all positive, a forecast of what is to come.
            draw.text((x + 2, y_pred + 2), f"+{(stamp - t_got) / 1e9:.2f}s", fill="yellow")
            real = _nearest(rec.camera, stamp, tolerance_ns)
            if real is not None:
                canvas.paste(Image.fromarray(real).resize((w, h)), (x, y_real))
    return canvas


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = _ros_environment(args.domain_id)
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "MUJOCO_GL")})
    logs = args.out.with_suffix(".logs")
    logs.mkdir(parents=True, exist_ok=True)
    sim_cmd = [_executable("astra-sim-node"), "--ros-args", "-p", "scenario:=rover", "-p", f"seed:={args.seed}",
               "-p", "size:=128x128"]
    pred_cmd = [_executable("astra-predictor"), "--ros-args", "-p", f"checkpoint:={args.checkpoint}",
                "-p", "action_modality:=twist", "-p", f"horizon_s:={float(args.horizon_s)}",
                "-p", f"publish_rate:={float(args.publish_rate)}",
                "-r", "image:=/camera/image_raw", "-r", "twist:=/cmd_vel", "-r", "odom:=/odom",
                "-r", "camera_info:=/camera/camera_info"]
    procs: list[tuple[str, subprocess.Popen]] = []
    # SIGTERM (a supervisor, `timeout`) must run the cleanup below too, or the nodes outlive the demo.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for name, cmd in (("sim", sim_cmd), ("predictor", pred_cmd)):
            out = open(logs / f"{name}.log", "w")
            procs.append((name, subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)))
        print(f"astra-demo: simulator and predictor started (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, logs in {logs})")
        rec, model_latency = _drive_and_record(args, partial(_check_children, procs, logs))
        _check_children(procs, logs)  # a node that died during the drive: the strip would not show the system
    except ChildExited as error:
        print(f"astra-demo: {error}", file=sys.stderr)
        return 1
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    tolerance_ns = 60_000_000  # half a camera period at 10 Hz
    strip = _strip(rec, rows=3, tolerance_ns=tolerance_ns)
    leads = [p["lead_s"] for p in rec.predictions]
    coverage = [p["coverage_s"] for p in rec.predictions]
    span_s = ((rec.predictions[-1]["received_ns"] - rec.predictions[0]["received_ns"]) / 1e9
              if len(rec.predictions) > 1 else 0.0)
    summary = {
        "checkpoint": args.checkpoint,
        "camera_frames": len(rec.camera),
        "predictions": len(rec.predictions),
        "model_latency_s": {"p50": float(np.median(model_latency)), "max": float(np.max(model_latency))} if model_latency else None,
        # Against the demo's own clock when each forecast arrived: lead = first frame's time - arrival.
        "lead_s": {"p10": float(np.percentile(leads, 10)), "p50": float(np.median(leads))} if leads else None,
        "coverage_s": {"p50": float(np.median(coverage))} if coverage else None,
        "predictions_per_s": (len(rec.predictions) - 1) / span_s if span_s > 0 else None,
        "out": str(args.out),
    }
    if strip is None:
        print(json.dumps(summary))
        print("astra-demo: no prediction matched the camera frames; see the node logs in " + str(logs), file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(args.out)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
