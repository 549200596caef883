"""astra-bench --quick writes the figures the speed issue asks for (values are measured, not asserted)."""

import json

import pytest

from astra_ros.cli.bench import main


def test_quick_bench_writes_every_contract_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--checkpoint", "random:tiny", "--quick", "--threads", "1", "--scaled-resolution", "16",
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    s = r["stream_chunks"]
    assert len(s["kv_latency_s"]) == len(s["recompute_latency_s"]) == len(s["chunks"])
    assert all(v > 0 for v in s["kv_latency_s"])
    assert r["predicted_fps"] > 0 and r["predicted_fps_16px"] > 0
    assert len(r["batch"]["imagine_frames_per_s"]) == len(r["batch"]["sizes"])
    # The step's figures, from one run: FLOPs (attention part within), time, peak, their ratio.
    assert 0 < r["step_attention_flops"] < r["step_flops"]
    assert r["step_seconds"] > 0 and r["matmul_peak_gflops"] > 0
    assert r["step_vs_matmul_peak"] == pytest.approx(r["step"]["models"]["checkpoint"]["step_vs_matmul_peak"]["median"])
    assert 0 < r["step_vs_matmul_peak"] < 2
    fractions = r["step_stage_fraction"]
    assert set(fractions) == {"codec_encode", "transformer", "codec_decode", "anchor_decoder", "glue"}
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert all(v >= 0 for k, v in fractions.items() if k != "glue")
    check = r["step_flops_check"]
    assert check["analytic_without_attention"] <= check["flop_counter"] <= 1.05 * check["analytic_without_attention"]
    # True peaks (VmHWM): the whole run's holds two models, so it is above the lone stream's.
    assert r["peak_rss_mb"] >= r["long_stream"]["peak_rss_mb"] > 0
    printed = capsys.readouterr().out
    assert "step_vs_matmul_peak" in printed and "16x16" in printed
    # Whether the step's codec calls ran batched here, said in the JSON and printed.
    batched = r["step"]["models"]["checkpoint"]["batched_codec_calls"]
    assert isinstance(batched, bool) and f"codec calls batched: {'yes' if batched else 'no'}" in printed


def test_bad_checkpoint_exits_2(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "missing"), "--quick", "--out", str(tmp_path / "b.json")]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err


def test_a_scaled_resolution_the_architecture_cannot_take_exits_2_before_timing(tmp_path, capsys):
    assert main(["--checkpoint", "random:tiny", "--quick", "--scaled-resolution", "30", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "--scaled-resolution 30" in err and "multiples" in err and "Traceback" not in err
    assert not (tmp_path / "b.json").exists()


def test_compile_reports_both_models_or_exits_2_with_the_reason(tmp_path, capsys, monkeypatch, broken_torch_compile):
    import torch

    args = ["--checkpoint", "random:tiny", "--quick", "--threads", "1", "--scaled-resolution", "16", "--compile"]
    assert main(args + ["--out", str(tmp_path / "c.json")]) == 2
    assert f"--compile: torch.compile failed here (RuntimeError: {broken_torch_compile}" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
    # The reporting path (the compiler replaced by the same function: the real one is test_compiled.py's).
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    assert main(args + ["--out", str(tmp_path / "b.json")]) == 0
    compiled = json.loads((tmp_path / "b.json").read_text())["compiled"]
    assert set(compiled) == {"checkpoint", "scaled", "applies_to"}
    assert compiled["scaled"]["modules"] == ["codec.encoder", "codec.decoder"]
    assert compiled["checkpoint"]["max_grey_level_difference"] == 0 and compiled["checkpoint"]["seconds"] > 0
    assert "compiled (codec and anchor decoder): checkpoint in" in capsys.readouterr().out
