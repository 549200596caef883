"""A shortened soak (bench/soak.py for 30 s): the node stays alive, predicts throughout, accounts for every
input it received and does not grow in memory.

The long run (``python bench/soak.py --minutes 10 --out ...``) is a benchmark, not a test. The environment
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a ROS_DOMAIN_ID of this run) comes from conftest.py.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("astra_ros.msg", reason="astra_ros.msg and astra_ros.srv not built (scripts/setup.sh builds it)")

REPO = Path(__file__).resolve().parents[1]
MINUTES = 0.5
RSS_GROWTH_TOLERANCE_MB = 15.0  # end of the run vs the first half's median (allocator noise is a few MB)


def test_short_soak_keeps_predicting_accounts_for_every_input_and_stays_flat(tmp_path):
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    out = tmp_path / "soak.json"
    # Its own session, so that whatever happens the soak and the node it started go with it.
    soak = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "soak.py"), "--minutes", str(MINUTES), "--out", str(out),
         "--sample-s", "1.0", "--startup-timeout-s", "60", "--source", "synthetic", "--checkpoint", "random:tiny",
         "--horizon-s", "0.5"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = soak.communicate(timeout=200)
    except subprocess.TimeoutExpired:  # a backstop: the soak's own watchdog (60 + 30 + 90 s) prints stacks first
        os.killpg(soak.pid, signal.SIGKILL)
        stdout, stderr = soak.communicate()
        pytest.fail(f"the soak did not end within 200 s:\n{stdout}\n{stderr}")
    finally:
        try:
            os.killpg(soak.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run = subprocess.CompletedProcess(soak.args, soak.returncode, stdout, stderr)
    assert out.exists(), run.stdout + run.stderr
    result = json.loads(out.read_text())
    print(run.stdout)
    assert out.with_suffix(".png").stat().st_size > 0

    assert result["node_alive_at_end"]
    # Forecasts throughout (the loop starts the next as soon as one is out), never a gap of seconds.
    assert result["published"] >= MINUTES * 60 * 1.0
    assert result["predictions_longest_gap_s"] < 3.0
    assert result["latency_ms"]["n"] >= result["published"] - 2  # each prediction's latency reached /diagnostics
    assert result["latency_ms"]["p50"] > 0 and result["age_ms"]["p99"] > 0
    assert result["lead_ms"]["p50"] > 0  # forecasts start after the moment this client received them

    inputs = result["inputs"]
    assert inputs["balance"] == 0 and inputs["accounted"], inputs
    assert inputs["received"] == inputs["used"] + sum(inputs["skipped"].values()) + inputs["pending"]
    for name, stream in inputs["per_stream"].items():
        # The soak sends only to a subscribed node, so nearly all arrives (measured: all of it).
        assert 0.9 * stream["sent"] <= stream["received"] <= stream["sent"], (name, stream)
    assert inputs["per_stream"]["image"]["used"] > 0 and inputs["per_stream"]["twist"]["used"] > 0

    rss = np.array([s["rss_mb"] for s in result["rss_mb"]])
    assert len(rss) >= 0.8 * MINUTES * 60
    first_half = float(np.median(rss[: len(rss) // 2]))
    assert rss[-1] - first_half < RSS_GROWTH_TOLERANCE_MB, f"RSS grew from {first_half} to {rss[-1]} MB"
    assert result["rss"]["slope_mb_per_min_second_half"] < 2 * RSS_GROWTH_TOLERANCE_MB
    assert run.returncode == 0, run.stderr
