"""The README's main job, astra-demo: simulator node + predictor + scripted driver, end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("astra_ros.msg")


def test_demo_drives_the_simulator_and_saves_predictions_next_to_reality(tmp_path):
    out = tmp_path / "demo.png"
    exe = Path(sys.executable).parent / "astra-demo"
    proc = subprocess.run([str(exe), "--checkpoint", "random:tiny", "--seconds", "8", "--publish-rate", "2.0",
                           "--horizon-s", "0.6", "--out", str(out)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["camera_frames"] > 40  # 10 Hz camera for 8 s
    assert summary["predictions"] >= 3
    assert 0 < summary["model_latency_s"]["p50"] < 5.0
    # Forecasts of what is to come, read against the demo's own clock when they arrived.
    assert summary["lead_s"]["p10"] > 0 and summary["coverage_s"]["p50"] >= 0.5
    from PIL import Image

    strip = Image.open(out)
    assert strip.width > 4 * 32 and strip.height >= 2 * 32


def test_demo_stops_at_once_with_the_nodes_error_when_a_node_cannot_start(tmp_path):
    """A predictor that fails at start (here: no such checkpoint) exits after a couple of seconds; the
    demo used to look only once, after 1 s, and then wait 120 s for a prediction that never came."""
    out = tmp_path / "demo.png"
    exe = Path(sys.executable).parent / "astra-demo"
    proc = subprocess.run([str(exe), "--checkpoint", str(tmp_path / "no_such_checkpoint"), "--seconds", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "the predictor node exited (code 1)" in proc.stderr and "no_such_checkpoint" in proc.stderr, proc.stderr
    assert not out.exists()


def test_demo_refuses_a_domain_whose_ports_are_ephemeral(tmp_path):
    exe = Path(sys.executable).parent / "astra-demo"
    proc = subprocess.run([str(exe), "--domain-id", "150", "--out", str(tmp_path / "d.png")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--domain-id must be in 0-101" in proc.stderr, proc.stderr
