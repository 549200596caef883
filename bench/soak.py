"""Soak test of the predictor node: hours of input compressed into ``--minutes``, with the node's own counts.

    python bench/soak.py --minutes 10 --out bench/results/soak_10min.json [--checkpoint default|random:tiny|DIR]

Starts ``astra-predictor`` (the default model, twist actions) as a subprocess. With ``--source sim``
(the default) the simulator node feeds it: ``astra-sim-node`` (rover driving on its own, a camera at
``--camera-hz`` (30), odometry at three times that), the predictor taking its twists from the
odometry. With ``--source synthetic`` this script's node publishes a synthetic moving camera image at
``--camera-hz`` and poses and twists at ``--state-hz`` (100) each. While it runs it samples the node process's resident memory (VmRSS from
/proc), records every ``~/predicted/frames`` message (count and age: publication time minus the
observed frame's stamp) and every ``/diagnostics`` message (the model latency of each prediction, the
input accounting). At the end the publishers stop, the queues drain, and the node's last diagnostics
must account for every input it received: ``received == used + skipped (by reason) + pending``.

Writes ``--out`` (JSON: ``rss_mb`` samples, ``rss`` summary with the slope [MB/min] over the second half,
``latency_ms`` p50/p99 of the model, ``age_ms`` p50/p99 end to end, ``published``, ``inputs``,
``node_alive_at_end``) and a PNG of RSS and predictions over time next to it. Exit code 0 when the node
stayed alive, predicted throughout and accounted for every input; 1 otherwise.

DDS stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) on a domain of its own.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # never multicast discovery off this machine
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, Twist  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from astra_ros.ros.runner import BackgroundSpinner  # noqa: E402
from astra_ros.msg import PredictedFrames  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NODE = "/astra_predictor"
DRAIN_S = 3.0  # [s] after the publishers stop: the last inputs are processed and two diagnostics go out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, required=True, help="how long inputs are published [min]")
    p.add_argument("--out", type=Path, required=True, help="JSON to write; the plot goes next to it (.png)")
    p.add_argument("--checkpoint", default="default", help="'default', 'random:tiny' (fast) or a directory")
    p.add_argument("--source", default="sim", choices=("sim", "synthetic"),
                   help="what feeds the node: the simulator node, or this script's synthetic camera and states")
    p.add_argument("--modality", default="twist", choices=("twist", "camera"), help="actions the node feeds the model")
    p.add_argument("--camera-hz", type=float, default=30.0, help="image rate [Hz]")
    p.add_argument("--state-hz", type=float, default=100.0, help="pose and twist rate [Hz] (each)")
    p.add_argument("--size", default="128x96", help="published image size WxH")
    p.add_argument("--publish-rate", type=float, default=10.0, help="the node's cap on forecasts per second [Hz]")
    p.add_argument("--horizon-s", type=float, default=2.0, help="the node's horizon_s [s]")
    p.add_argument("--sample-s", type=float, default=2.0, help="RSS sampling interval [s]")
    p.add_argument("--startup-timeout-s", type=float, default=120.0, help="longest wait for the node's first prediction [s]")
    return p.parse_args(argv)


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` [MB] from /proc, None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # kB -> MB
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p99": None, "mean": None, "max": None, "n": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(array, 50)), 2), "p99": round(float(np.percentile(array, 99)), 2),
            "mean": round(float(array.mean()), 2), "max": round(float(array.max()), 2), "n": int(array.size)}


def slope_mb_per_min(samples: list[dict[str, float]]) -> float | None:
    """Least-squares slope of RSS [MB/min] over the second half of the samples."""
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return None
    t = np.array([s["t_s"] for s in half]) / 60.0
    y = np.array([s["rss_mb"] for s in half])
    return round(float(np.polyfit(t, y, 1)[0]), 3)


class SoakClient:
    """This script's node: publishes the camera, poses and twists; records predictions and diagnostics."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("astra_soak", context=self.context)
        qos = QoSProfile(depth=10)
        self.image_pub = self.node.create_publisher(Image, "/soak/image", qos)
        self.pose_pub = self.node.create_publisher(PoseStamped, "/soak/pose", qos)
        self.twist_pub = self.node.create_publisher(Twist, "/soak/cmd_vel", qos)
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.predictions: list[tuple[float, float]] = []  # (t [s] since start, age [ms])
        self.leads_ms: list[float] = []  # first frame's time minus arrival, on this client's clock
        self.latencies_ms: list[float] = []
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_count = 0
        self.sent = {"image": 0, "pose": 0, "twist": 0}
        self.publishing = threading.Event()
        self.stopping = threading.Event()
        self.node.create_subscription(PredictedFrames, f"{NODE}/predicted/frames", self._on_frames, QoSProfile(depth=50))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, QoSProfile(depth=50))
        self.spinner = BackgroundSpinner(self.node)
        self.publisher: threading.Thread | None = None
        width, height = (int(v) for v in args.size.lower().split("x"))
        y, x = np.mgrid[0:height, 0:2 * width]
        # A wide striped texture; each frame is a window sliding across it (the camera turning).
        self.texture = np.stack([(x * 4) % 256, (y * 3) % 256, ((x + y) * 2) % 256], axis=-1).astype(np.uint8)
        self.width, self.height = width, height

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _on_frames(self, msg) -> None:
        received_ns = self.node.get_clock().now().nanoseconds
        anchor_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec  # the present it was planned at
        observed_ns = msg.observed_stamp.sec * 1_000_000_000 + msg.observed_stamp.nanosec
        first_ns = msg.stamps[0].sec * 1_000_000_000 + msg.stamps[0].nanosec
        with self.lock:
            self.predictions.append((self.now(), (anchor_ns - observed_ns) * 1e-6))
            self.leads_ms.append((first_ns - received_ns) * 1e-6)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        if not any(status.hardware_id == "astra_predictor" for status in msg.status):
            return
        values = {v.key: v.value for status in msg.status for v in status.values}
        new = [float(v) for v in values.get("latency_new_ms", "").split(",") if v]
        with self.lock:
            self.diagnostics = values
            self.diagnostics_count += 1
            self.latencies_ms += new

    def _stamp(self, header, stamp_ns: int) -> None:
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)

    def image(self, stamp_ns: int, index: int) -> Image:
        offset = (index * 2) % self.width
        frame = np.ascontiguousarray(self.texture[:, offset:offset + self.width])
        msg = Image(height=self.height, width=self.width, encoding="rgb8", step=self.width * 3)
        self._stamp(msg.header, stamp_ns)
        msg.header.frame_id = "soak_camera"
        msg.data = frame.tobytes()
        return msg

    def publish_loop(self) -> None:
        """Poses and twists every state tick, an image whenever one is due; on an absolute schedule."""
        state_dt, camera_dt = 1.0 / self.args.state_hz, 1.0 / self.args.camera_hz
        next_state = next_image = time.monotonic()
        tick = 0
        while not self.stopping.is_set():
            # Nothing is sent (or counted) before the node subscribes: while it loads its model,
            # messages would count as sent but could never be received.
            if not self.publishing.is_set() or self.image_pub.get_subscription_count() == 0:
                time.sleep(0.01)
                next_state = next_image = time.monotonic()
                continue
            now = time.monotonic()
            stamp_ns = self.node.get_clock().now().nanoseconds
            if now >= next_state:
                angle = 0.2 * tick * state_dt  # driving a circle: 0.5 m/s, 0.2 rad/s
                pose = PoseStamped()
                self._stamp(pose.header, stamp_ns)
                pose.header.frame_id = "world"
                pose.pose.position.x, pose.pose.position.z = 2.5 * np.sin(angle), 2.5 * np.cos(angle)
                pose.pose.orientation.y, pose.pose.orientation.w = np.sin(angle / 2), np.cos(angle / 2)
                self.pose_pub.publish(pose)
                twist = Twist()
                twist.linear.x, twist.angular.z = 0.5, 0.2
                self.twist_pub.publish(twist)
                self.sent["pose"] += 1
                self.sent["twist"] += 1
                tick += 1
                next_state = max(next_state + state_dt, now - 0.1)  # never a catch-up burst after a stall
            if now >= next_image:
                self.image_pub.publish(self.image(stamp_ns, self.sent["image"]))
                self.sent["image"] += 1
                next_image = max(next_image + camera_dt, now - 0.1)
            time.sleep(max(0.0, min(next_state, next_image) - time.monotonic()))

    def start_publishing(self) -> None:
        self.publisher = threading.Thread(target=self.publish_loop, daemon=True)
        self.publisher.start()
        self.publishing.set()

    def close(self) -> None:
        # Publishing and spinning end (threads joined) before the node and context go.
        self.stopping.set()
        if self.publisher is not None:
            self.publisher.join(5.0)
        if not self.spinner.stop():
            print("soak: warning: the client's spin thread did not stop", file=sys.stderr, flush=True)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def start_node(args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    script = Path(sys.executable).parent / "astra-predictor"
    command = [
        str(script) if script.exists() else "astra-predictor", "--ros-args",
        "--params-file", str(REPO / "config" / "predictor.yaml"),
        "-p", f"checkpoint:={args.checkpoint}", "-p", f"action_modality:={args.modality}",
        "-p", f"publish_rate:={float(args.publish_rate)}", "-p", f"horizon_s:={float(args.horizon_s)}",
    ]
    if args.source == "sim":  # the simulator's topics; twists from its odometry (it drives itself)
        command += ["-p", "twist_source:=odom", "-r", "image:=/camera/image_raw",
                    "-r", "odom:=/odom", "-r", "camera_info:=/camera/camera_info", "-r", "twist:=/cmd_vel"]
    else:
        command += ["-r", "image:=/soak/image", "-r", "pose:=/soak/pose", "-r", "twist:=/soak/cmd_vel",
                    "-r", "odom:=/soak/odom"]
    return subprocess.Popen(command, cwd=REPO, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def start_simulator(args: argparse.Namespace, log_path: Path) -> subprocess.Popen | None:
    if args.source != "sim":
        return None
    script = Path(sys.executable).parent / "astra-sim-node"
    width, height = (int(v) for v in args.size.lower().split("x"))
    rate = int(round(args.camera_hz))
    command = [str(script) if script.exists() else "astra-sim-node", "--ros-args", "-p", "scenario:=rover",
               "-p", "seed:=9300", "-p", f"rate_hz:={rate}", "-p", f"state_rate_hz:={3 * rate}",
               "-p", f"size:={width}x{height}"]
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return subprocess.Popen(command, cwd=REPO, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env)


def plot(path: Path, rss: list[dict[str, float]], predictions: list[tuple[float, float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot([s["t_s"] / 60 for s in rss], [s["rss_mb"] for s in rss], lw=1.5)
    top.set_ylabel("predictor RSS [MB]")
    top.set_title(title)
    top.grid(alpha=0.3)
    if predictions:
        t = np.array([p[0] for p in predictions]) / 60
        bottom.plot(t, np.arange(1, len(t) + 1), lw=1.5, color="tab:green")
    bottom.set_ylabel("predictions published")
    bottom.set_xlabel("time [min]")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = args.out.with_suffix(".log")
    # Should anything hang (DDS, a thread), stop with every thread's stack on stderr instead of silently.
    faulthandler.dump_traceback_later(args.startup_timeout_s + 60.0 * args.minutes + 90.0, exit=True)
    process = start_node(args, log_path)
    simulator = start_simulator(args, args.out.with_suffix(".sim.log"))
    client = SoakClient(args)
    rss: list[dict[str, float]] = []
    try:
        # 1. Start: publish until the first prediction (the node loads its model meanwhile).
        if simulator is None:
            client.start_publishing()
        deadline = time.monotonic() + args.startup_timeout_s
        while not client.predictions:
            if process.poll() is not None or time.monotonic() > deadline:
                print(f"soak: the node {'exited' if process.poll() is not None else 'never predicted'}; "
                      f"see {log_path}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        started = client.now()
        print(f"soak: first prediction after {started:.1f} s (ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}); "
              f"running {args.minutes} min", flush=True)
        # 2. Soak: sample RSS on a fixed schedule.
        end = started + 60.0 * args.minutes
        next_sample = started
        while client.now() < end and process.poll() is None:
            if client.now() >= next_sample:
                value = rss_mb(process.pid)
                if value is not None:
                    rss.append({"t_s": round(client.now() - started, 2), "rss_mb": round(value, 2)})
                next_sample += args.sample_s
            time.sleep(0.05)
        # 3. Drain: stop the inputs, let the node settle, read its last accounting.
        client.publishing.clear()
        if simulator is not None:
            simulator.send_signal(2)
            simulator.wait(timeout=15)
        time.sleep(DRAIN_S)
        alive = process.poll() is None
        with client.lock:
            values = dict(client.diagnostics)
            predictions = [(t - started, age) for t, age in client.predictions]
            latencies = list(client.latencies_ms)
            leads = list(client.leads_ms)
            sent = dict(client.sent)
    finally:
        client.close()
        if simulator is not None and simulator.poll() is None:
            simulator.kill()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    skipped = {k[len("input_skipped_"):]: int(v) for k, v in sorted(values.items()) if k.startswith("input_skipped_")}
    received, used = int(values.get("inputs_received", 0)), int(values.get("inputs_used", 0))
    pending = int(values.get("inputs_pending", 0))
    balance = received - used - sum(skipped.values()) - pending
    soak_times = [t for t, _ in predictions if 0 <= t <= 60.0 * args.minutes]
    gaps = np.diff([0.0] + soak_times + [60.0 * args.minutes]) if soak_times else np.array([60.0 * args.minutes])
    result = {
        "config": {"minutes": args.minutes, "checkpoint": args.checkpoint, "modality": args.modality,
                   "source": args.source,
                   "camera_hz": args.camera_hz,
                   # the simulator source publishes its states at 3x the camera rate, whatever --state-hz says
                   "state_hz": 3 * round(args.camera_hz) if args.source == "sim" else args.state_hz, "size": args.size,
                   "publish_rate_hz": args.publish_rate, "machine_cpus": os.cpu_count()},
        "rss_mb": rss,
        "rss": {"start_mb": rss[0]["rss_mb"] if rss else None, "end_mb": rss[-1]["rss_mb"] if rss else None,
                "max_mb": max((s["rss_mb"] for s in rss), default=None),
                "slope_mb_per_min_second_half": slope_mb_per_min(rss)},
        "latency_ms": percentiles(latencies),  # model time per prediction (start + imagine), from /diagnostics
        "age_ms": percentiles([age for _, age in predictions]),  # newest observed frame's age when planned
        "lead_ms": percentiles(leads),  # first forecast frame's time minus its arrival (>= 0: ahead of the clock)
        "published": len(predictions),
        "predictions_longest_gap_s": round(float(gaps.max()), 2),
        "inputs": {
            "received": received, "used": used, "skipped": skipped, "pending": pending,
            "balance": balance,  # received - used - skipped - pending: 0 when every input is accounted for
            "accounted": balance == 0 and values.get("inputs_accounted") == "true",
            "per_stream": {name: {"sent": sent.get(name, 0), "received": int(values.get(f"received_{name}", 0)),
                                  "used": int(values.get(f"used_{name}", 0)),
                                  "lost_in_transport": int(values.get(f"lost_in_transport_{name}", 0))}
                           for name in ("image", "pose", "twist")},
        },
        "skipped_ticks": {k[len("skipped_"):]: int(v) for k, v in sorted(values.items()) if k.startswith("skipped_")},
        "node_alive_at_end": alive,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(args.out.with_suffix(".png"), rss, predictions,
         f"astra_predictor soak: {args.minutes} min, {args.checkpoint}, "
         + (f"simulator: camera {args.camera_hz:g} Hz, odometry {3 * round(args.camera_hz)} Hz" if args.source == "sim"
            else f"camera {args.camera_hz:g} Hz, states {args.state_hz:g} Hz"))
    summary = {k: result[k] for k in ("rss", "latency_ms", "age_ms", "published", "predictions_longest_gap_s",
                                       "node_alive_at_end")}
    print(json.dumps(summary | {"inputs": {k: result["inputs"][k] for k in ("received", "used", "skipped", "pending",
                                                                               "balance")}}, indent=1), flush=True)
    faulthandler.cancel_dump_traceback_later()
    ok = alive and result["inputs"]["accounted"] and result["predictions_longest_gap_s"] < 10.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
