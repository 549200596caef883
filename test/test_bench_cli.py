"""astra-bench --quick writes the figures the speed issue asks for (values are measured, not asserted)."""

import json

from astra_ros.cli.bench import main


def test_quick_bench_writes_every_contract_figure(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--checkpoint", "random:tiny", "--quick", "--threads", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    s = r["stream_chunks"]
    assert len(s["kv_latency_s"]) == len(s["recompute_latency_s"]) == len(s["chunks"])
    assert all(v > 0 for v in s["kv_latency_s"])
    assert r["predicted_fps"] > 0 and r["peak_rss_mb"] > 0
    assert len(r["batch"]["imagine_frames_per_s"]) == len(r["batch"]["sizes"])
    assert r["matmul_peak_gflops"] > 0 and r["transformer_gflops"] > 0
    assert r["transformer"]["flops_per_step"] > 0


def test_bad_checkpoint_exits_2(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "missing"), "--quick", "--out", str(tmp_path / "b.json")]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err
