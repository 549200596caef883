"""Console scripts refuse bad options at once, with one line naming the option (exit 2), before any work."""

import pytest

from astra_ros.cli import bench, eval as eval_cli, rollout, sim, train
from astra_ros.ros import demo


def _usage_error(parse, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_image_outputs_must_be_image_files_outside_directories(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for parse in (demo.parse_args, rollout.parse_args):
        assert ".png or .jpg" in _usage_error(parse, ["--out", str(tmp_path / "strip.txt")], capsys)
        assert "is a directory" in _usage_error(parse, ["--out", str(tmp_path)], capsys)
        assert "is a file, not a directory" in _usage_error(parse, ["--out", str(tmp_path / "file" / "a.png")], capsys)
        assert parse(["--out", str(tmp_path / "new" / "strip.png")]).out.name == "strip.png"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_output_directories_must_not_be_files(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = _usage_error(train.parse_args, ["--config", "r.yaml", "--data", "d", "--out", str(tmp_path / "file")], capsys)
    assert "--out" in err and "not a directory" in err
    err = _usage_error(sim.parse_args, ["record", "--scenario", "rover", "--out", str(tmp_path / "file")], capsys)
    assert "--out" in err and "not a directory" in err


def test_numbers_out_of_range_are_refused(tmp_path, capsys):
    out = ["--out", str(tmp_path / "d.png")]
    for value in ("-5", "0", "nan", "inf"):
        assert "--seconds" in _usage_error(demo.parse_args, ["--seconds", value, *out], capsys)
    assert "--publish-rate" in _usage_error(demo.parse_args, ["--publish-rate", "nan", *out], capsys)
    assert "--horizon" in _usage_error(demo.parse_args, ["--horizon", "-1", *out], capsys)
    assert "--seed" in _usage_error(demo.parse_args, ["--seed", "-3", *out], capsys)
    train_args = ["--config", "r.yaml", "--data", "d", "--out", str(tmp_path / "run")]
    assert "--stop-after" in _usage_error(train.parse_args, [*train_args, "--stop-after", "-1"], capsys)
    assert train.parse_args([*train_args, "--stop-after", "0"]).stop_after == 0  # writes the starting weights
    assert "--threads" in _usage_error(eval_cli.parse_args, ["b", "--out", str(tmp_path), "--threads", "0"], capsys)
    assert "--threads" in _usage_error(bench.parse_args, ["--threads", "-1", "--out", str(tmp_path / "b.json")], capsys)
    assert "--seed" in _usage_error(rollout.parse_args, ["--seed", "-1", *out], capsys)  # was a numpy traceback
    assert "--scaled-resolution" in _usage_error(
        bench.parse_args, ["--scaled-resolution", "0", "--out", str(tmp_path / "b.json")], capsys)
    assert "at most 4096x4096" in _usage_error(
        sim.parse_args, ["record", "--scenario", "rover", "--out", str(tmp_path), "--size", "100000x100000"], capsys)


@pytest.mark.parametrize("scale", ["nan", "inf", "-1"])
def test_a_guidance_scale_that_is_not_a_finite_non_negative_number_is_one_line(tmp_path, capsys, scale):
    assert eval_cli.main([str(tmp_path), "--out", str(tmp_path / "eval"), "--guidance-scale", scale]) == 2
    err = capsys.readouterr().err
    assert "guidance scale must be a finite number >= 0" in err and "Traceback" not in err


def test_astra_bench_does_not_overwrite_the_shipped_figures_by_default():
    assert bench.parse_args([]).out.parts[:2] != ("bench", "results")
