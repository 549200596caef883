"""``astra-eval`` end to end: a tiny random model replayed over short simulator bags and hand-written bags."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from astra_ros.cli.eval import grid_clips, main, parse_args, summary_table
from astra_ros.eval.report import write_metrics_json, write_report
from astra_ros.data.bags import BagTopics, Episode, read_episode
from astra_ros.data.record import record_episode
from astra_ros.data.scenes import SimSettings
from astra_ros.eval.dynamics import clip_errors, dynamics_summary
from astra_ros.eval.frames import load_clip_frames
from astra_ros.eval.metrics import psnr
from astra_ros.eval.replay import (ClipResult, EvalError, EvalOptions, ReplayPlan, _windows, evaluate_bags,
                                   predict_pair)
from astra_ros.eval.replay_bags import ReplayBag
from astra_ros.eval.summaries import rotation_paired
from astra_ros.model import WorldModel, preset

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types
EPOCH_NS = 1_700_000_000 * 1_000_000_000
CONTRACT_KEYS = ("horizon_s", "psnr", "ssim", "action_sensitivity", "rotation_error_deg", "translation_dir_error_deg",
                 "clips", "checkpoint", "bags")
OUTPUTS = ("metrics.json", "metrics.png", "grid.png", "rollout.mp4", "report.md")
# 0.4 s at 10 Hz = 4 predicted frames (two chunks of the tiny model), 4 observed frames.
FAST = ["--horizon-s", "0.4", "--context-frames", "4", "--stride-s", "0.5", "--clips-per-bag", "3", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model runs fastest on one thread, and other work may share the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def checkpoint(workdir) -> Path:
    torch.manual_seed(0)
    return WorldModel(preset("tiny", resolution=(32, 32))).save_pretrained(workdir / "ckpt")


@pytest.fixture(scope="module")
def sim_bags(workdir) -> dict[str, Path]:
    settings = SimSettings(seconds=3.0, image_width=64, image_height=64)
    return {s: record_episode(s, 0, workdir / "bags", settings=settings, progress=False) for s in ("explore", "rover")}


def _header(stamp_ns: int, frame_id: str):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
        frame_id=frame_id,
    )


def write_foreign_bag(path: Path, frames: int = 30, gap_after: int | None = None, messages: bool = True,
                      still_after: int | None = None) -> Path:
    """Images (bgr8, 48x40, 10 Hz) on /front/color and TwistStamped commands on /base/cmd.

    Every frame is mostly red in RGB (so its bgr8 bytes are mostly blue) with a moving bar; after
    frame ``gap_after`` the stamps jump by an extra 0.5 s; after frame ``still_after`` the bar stops.
    """
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image = writer.add_connection("/front/color", "sensor_msgs/msg/Image", typestore=TYPESTORE)
        cmd = writer.add_connection("/base/cmd", "geometry_msgs/msg/TwistStamped", typestore=TYPESTORE)
        if not messages:
            return path
        vector = T["geometry_msgs/msg/Vector3"]
        for i in range(frames):
            stamp = EPOCH_NS + i * 100_000_000 + (500_000_000 if gap_after is not None and i > gap_after else 0)
            twist = T["geometry_msgs/msg/Twist"](linear=vector(0.2, 0.0, 0.0), angular=vector(0.0, 0.0, 0.3 * (i % 3)))
            message = T["geometry_msgs/msg/TwistStamped"](header=_header(stamp, "base_link"), twist=twist)
            writer.write(cmd, stamp, TYPESTORE.serialize_cdr(message, "geometry_msgs/msg/TwistStamped"))
            rgb = np.zeros((40, 48, 3), np.uint8)
            rgb[..., 0] = 220
            at = min(i, still_after) if still_after is not None else i
            rgb[:, (at * 3) % 48:(at * 3) % 48 + 6] = (30, 200, 60)
            bgr = np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1)
            msg = T["sensor_msgs/msg/Image"](header=_header(stamp, "front"), height=40, width=48, encoding="bgr8",
                                             is_bigendian=0, step=48 * 3, data=bgr)
            writer.write(image, stamp, TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def test_end_to_end_writes_every_output_with_contract_keys(tmp_path, checkpoint, sim_bags, capsys):
    out = tmp_path / "out"
    rc = main([str(sim_bags["explore"]), str(sim_bags["rover"]), "--checkpoint", str(checkpoint), "--out", str(out),
               *[a for a in FAST if a != "--quiet"]])
    assert rc == 0, capsys.readouterr().err
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in CONTRACT_KEYS + ("skipped", "modality_per_bag", "seed", "wall_time_s"):
        assert key in metrics, key
    assert metrics["horizon_s"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    for key in ("psnr", "ssim"):
        assert set(metrics[key]) == {"model", "copy_last", "shuffled_actions", "codec_ceiling"}
        for series in metrics[key].values():
            assert len(series) == 4 and all(v is not None for v in series)
    # Per modality: the clips split between the bags' modalities and their means recombine.
    per = metrics["per_modality"]
    assert set(per) == {"camera", "twist"} and sum(row["clips"] for row in per.values()) == metrics["clips"]
    for series in ("model", "copy_last", "codec_ceiling"):
        combined = sum(row["clips"] * row[f"psnr_{series}"] for row in per.values()) / metrics["clips"]
        assert combined == pytest.approx(np.mean(metrics["psnr"][series]), abs=1e-6)
    assert "codec ceiling" in (out / "report.md").read_text()
    paired = metrics["rotation_paired"]  # explore has poses and intrinsics: the estimator was tried
    assert 0.0 <= paired["model_defined"] <= 1.0 and 0.0 <= paired["ground_truth_defined"] <= 1.0
    # The camera clips are the explore bag's: the modality's paired summary is the overall one.
    assert per["camera"]["rotation_paired"]["model_defined"] == paired["model_defined"]
    report = (out / "report.md").read_text()
    assert "| camera |" in report[report.index("On the same (clip, horizon) pairs"):]
    for key in ("rotation_error_deg", "translation_dir_error_deg"):
        assert set(metrics[key]) == {"model", "ground_truth"}
        assert all(len(series) == 4 for series in metrics[key].values())
    # Copying the last frame of a smooth simulation beats a random model, and gets worse with the horizon.
    copy = metrics["psnr"]["copy_last"]
    assert min(copy) > max(metrics["psnr"]["model"]) and copy[0] >= copy[-1]
    assert metrics["one_shot_latent_mse"]["ratio"] > 1  # and so does its latent, the health check says
    probe_rows = report[report.index("## One-shot estimate"):].splitlines()
    for row in ("| all | 6 |", "| camera | 3 |", "| twist | 3 |"):
        assert any(line.startswith(row) for line in probe_rows), row
    assert all(-1.0 <= v <= 1.0 for v in metrics["ssim"]["model"])
    assert 0.0 <= metrics["action_sensitivity"] <= 1.0
    assert metrics["clips"] == 6 and len(metrics["clip_windows"]) == 6  # 3 per bag
    assert metrics["modality_per_bag"] == {str(sim_bags["explore"]): "camera", str(sim_bags["rover"]): "twist"}
    assert metrics["checkpoint"] == str(checkpoint) and metrics["seed"] == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "ceiling" in printed and "twist PSNR" in printed and "one-shot MSE" in printed
    assert "pooled-MSE PSNR" in printed and "  explore     3 clips" in printed and "  rover       3 clips" in printed
    assert "## Dynamics" in report and "| rover | 3 |" in report
    # The bags' scenarios come from their names, and the flow estimator is the default.
    assert metrics["scenario_per_bag"] == {str(sim_bags["explore"]): "explore", str(sim_bags["rover"]): "rover"}
    assert [w["scenario"] for w in metrics["clip_windows"]] == ["explore", "rover"] * 3
    assert metrics["motion_estimator"] == "flow" and parse_args(["b", "--out", "o"]).motion_estimator == "flow"
    assert "copying beats the network" in printed  # the verdict follows the ratio (above 1 here)
    assert metrics["shuffled_clips"] == 6 and "shuffled*" not in printed
    # Where only some clips have shuffled actions, the column says it averages other clips.
    partial = summary_table(metrics | {"shuffled_clips": 4})
    assert "shuffled*" in partial and "* shuffled actions on 4 of 6 clips only" in partial
    partial_report = write_report(metrics | {"shuffled_clips": 4, "action_sensitivity_ci95": [0.2, 0.9]}, tmp_path)
    assert "averages only the 4 of 6 clips" in partial_report.read_text()
    assert "95 % interval 0.20-0.90 over 4 clips" in partial_report.read_text()  # the clips it was computed on


def test_a_folder_of_bags_is_every_bag_in_it_once(tmp_path, checkpoint, sim_bags, capsys):
    folder = sim_bags["explore"].parent
    out = tmp_path / "out"
    level = logging.getLogger("astra_ros").level
    rc = main([str(folder), str(sim_bags["rover"]), "--checkpoint", str(checkpoint), "--out", str(out), *FAST])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["bags"]) == sorted([str(sim_bags["explore"]), str(sim_bags["rover"])])
    assert metrics["clips"] == 6
    assert capsys.readouterr() == ("", "")  # --quiet: no bar, no log line, no summary
    # ...for its own call only: a later caller in the same process gets the package's warnings again.
    assert logging.getLogger("astra_ros").level == level != logging.ERROR
    rc = main([str(tmp_path), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o2"), "--quiet"])
    assert rc == 2 and "no ROS 2 bags found" in capsys.readouterr().err
    assert logging.getLogger("astra_ros").level == level


@pytest.fixture(scope="module")
def explore_result(checkpoint, sim_bags):
    model = WorldModel.from_pretrained(checkpoint)
    options = EvalOptions(horizon_s=0.4, context_frames=3, stride_s=0.4, clips_per_bag=4, progress=False)
    return model, evaluate_bags(model, [sim_bags["explore"]], options)


def test_copy_last_and_frames_come_from_the_bag(explore_result, sim_bags):
    model, result = explore_result
    assert result.plan.context_frames == 4  # 3 rounded up to whole chunks of 2
    episode = read_episode(sim_bags["explore"], resolution=model.resolution)
    clip = result.clips[1]
    np.testing.assert_array_equal(clip.observed, episode.frames[clip.start:clip.start + 4])
    np.testing.assert_array_equal(clip.real, episode.frames[clip.start + 4:clip.start + 8])
    direct = psnr(np.repeat(episode.frames[clip.start + 3][None], 4, axis=0), clip.real)
    np.testing.assert_allclose(clip.scores["psnr_copy_last"], direct)
    per_clip = np.stack([c.scores["psnr_copy_last"] for c in result.clips])
    np.testing.assert_allclose(result.metrics["psnr"]["copy_last"], per_clip.mean(axis=0))
    # Camera actions are rebased to the window's first frame, as in a training clip.
    np.testing.assert_allclose(clip.actions[0].reshape(3, 4), np.eye(4)[:3], atol=1e-6)


def test_shuffled_actions_come_from_another_clip(explore_result):
    _, result = explore_result
    n = result.plan.context_frames
    assert len(result.clips) == 4
    def transforms(rows):
        out = np.tile(np.eye(4), (len(rows), 1, 1))
        out[:, :3, :4] = np.asarray(rows, np.float64).reshape(-1, 3, 4)
        return out

    for index, clip in enumerate(result.clips):
        assert clip.shuffled_from is not None and clip.shuffled_from != index
        source = result.clips[clip.shuffled_from]
        # The other clip's camera path from its last observed frame, continued from this clip's last
        # observed pose (not its poses as they are: relative to another window's start, they would jump).
        own_last, src = transforms(clip.actions[n - 1:n])[0], transforms(source.actions)
        expected = own_last @ np.linalg.inv(src[n - 1]) @ src[n:]
        np.testing.assert_allclose(transforms(clip.shuffled_actions), expected, atol=1e-5)
        first_step = np.linalg.inv(own_last) @ transforms(clip.shuffled_actions[:1])[0]
        np.testing.assert_allclose(first_step, np.linalg.inv(src[n - 1]) @ src[n], atol=1e-5)
        assert result.metrics["clip_windows"][index]["shuffled_from"] == clip.shuffled_from
        assert clip.predicted_shuffled.shape == clip.predicted.shape


def test_true_and_shuffled_predictions_share_their_noise(explore_result):
    model, result = explore_result
    clip = result.clips[0]
    clip.shuffled_actions = clip.actions[result.plan.context_frames:].copy()
    predict_pair(model, clip, result.plan.context_frames, seed=3)
    np.testing.assert_array_equal(clip.predicted, clip.predicted_shuffled)


def test_one_shot_probe_scores_the_first_horizon_chunk_of_each_clip(explore_result):
    model, result = explore_result
    n, c = model.frames_per_chunk, result.plan.context_frames
    clip = result.clips[2]
    model.start(clip.observed, clip.actions[:c], modality=clip.modality, seed=2)  # clip 2 ran with seed 0 + 2
    assert model.one_shot_error(clip.real[:n], clip.actions[c:c + n], seed=2) == clip.one_shot
    probe = result.metrics["one_shot_latent_mse"]
    assert probe["clips"] == len(result.clips)
    assert probe["model"] == pytest.approx(np.mean([k.one_shot["one_shot"] for k in result.clips]))
    assert probe["copy_last"] == pytest.approx(np.mean([k.one_shot["copy_last"] for k in result.clips]))
    assert probe["ratio"] == pytest.approx(probe["model"] / probe["copy_last"])
    for key, field in (("model_psnr", "one_shot_psnr"), ("copy_last_psnr", "copy_last_psnr")):
        assert probe[key] == pytest.approx(np.mean([k.one_shot[field] for k in result.clips]))
    # The still cells of all clips pooled: each clip weighs by how many it has.
    fractions = np.array([k.one_shot["still_cells"] for k in result.clips])
    assert probe["still_cells"] == pytest.approx(fractions.mean())
    pooled = sum(f * k.one_shot["one_shot_still"] for f, k in zip(fractions, result.clips) if f > 0) / fractions.sum()
    assert probe["model_on_still_cells"] == pytest.approx(pooled)
    assert result.metrics["per_modality"]["camera"]["one_shot_latent_mse"] == probe  # one modality here


def test_foreign_topics_bgr8_and_twist_stamped(tmp_path, checkpoint, capsys):
    bag = write_foreign_bag(tmp_path / "foreign", frames=40, gap_after=25)
    out = tmp_path / "out"
    rc = main([str(bag), "--checkpoint", str(checkpoint), "--out", str(out), "--image-topic", "/front/color",
               "--twist-topic", "/base/cmd", "--horizon-s", "0.4", "--context-frames", "2", "--stride-s", "0.3",
               "--clips-per-bag", "3", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["modality_per_bag"] == {str(bag): "twist"}
    assert metrics["skipped"]["time_gap"] >= 1  # windows across the 0.5 s jump
    assert metrics["clips"] >= 2
    assert all(v is None for v in metrics["rotation_error_deg"]["model"])  # no pose, no intrinsics
    model = WorldModel.from_pretrained(checkpoint)
    topics = BagTopics(image="/front/color", twist="/base/cmd")
    result = evaluate_bags(model, [bag], EvalOptions(horizon_s=0.4, context_frames=2, clips_per_bag=2, topics=topics,
                                                                 progress=False))
    frame = result.clips[0].observed[0].astype(int)
    assert frame[..., 0].mean() > 150 and frame[..., 2].mean() < 100  # bgr8 decoded to red, not blue
    assert np.abs(result.clips[0].actions[:, 0] - 0.02).max() < 1e-6  # 0.2 m/s x 0.1 s


def test_a_still_camera_is_named_where_copy_last_scores_the_cap(tmp_path, checkpoint):
    """Frames that repeat the last observed one exactly give copy-last the 100 dB cap, which then
    dominates its mean; the metrics say so instead of leaving a copy-last mean of 60 dB unexplained."""
    bag = write_foreign_bag(tmp_path / "still", frames=40, still_after=20)
    model = WorldModel.from_pretrained(checkpoint)
    options = EvalOptions(horizon_s=0.4, context_frames=2, stride_s=0.3, clips_per_bag=20, progress=False,
                          topics=BagTopics(image="/front/color", twist="/base/cmd"))
    result = evaluate_bags(model, [bag], options)
    capped = sum(int((c.scores["psnr_copy_last"] == 100.0).sum()) for c in result.clips)
    still = sum(int(c.start + 2 > 21) * len(c.real) for c in result.clips)  # windows that observe the still bar
    assert capped >= still > 0
    assert any(f"{capped} of {sum(len(c.real) for c in result.clips)} real frames repeat" in n
               for n in result.metrics["notes"]), result.metrics["notes"]


def test_windows_skip_nan_actions_and_gaps():
    stamps = EPOCH_NS + np.arange(20) * 100_000_000
    stamps[12:] += 400_000_000  # a gap between frames 11 and 12
    actions = np.zeros((20, 6), np.float32)
    actions[3] = np.nan
    episode = Episode(np.zeros((20, 8, 8, 3), np.uint8), actions, stamps, "twist", None, "fake")
    plan = ReplayPlan(context_frames=2, horizon_frames=2, frame_interval_s=0.1, stride_frames=1)
    skipped: dict[str, int] = {}
    chosen = _windows([ReplayBag("fake", episode, 0.1, None, None)], plan, EvalOptions(clips_per_bag=100), skipped)
    starts = [start for _, start in chosen]
    # The gap after a window's last frame counts: that frame's twist action spans it.
    assert skipped == {"nan_actions": 4, "time_gap": 4}
    assert all(not (s <= 3 < s + 4) and not (s <= 11 < s + 4) for s in starts)
    assert len(starts) == 17 - 8


def test_a_clip_never_borrows_actions_equal_to_its_own():
    """One-hot keys or a robot standing still: borrowed actions equal to the clip's own predict the same
    frames, and the tie counted as a failure of the model. Such a clip borrows from a clip whose actions
    differ, or has no shuffled baseline (NaN, left out of the sensitivity) when none does."""
    from astra_ros.eval.replay import ClipResult, _assign_shuffled

    plan = ReplayPlan(context_frames=2, horizon_frames=3, frame_interval_s=0.1, stride_frames=1)
    forward, left = np.eye(7, dtype=np.float32)[1], np.eye(7, dtype=np.float32)[3]

    def clip(key) -> ClipResult:
        return ClipResult("bag", 0, 0, "keys", np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8),
                          np.tile(key, (5, 1)))

    for seed in range(20):
        clips = [clip(forward), clip(forward), clip(forward), clip(left)]
        notes: list[str] = []
        _assign_shuffled(clips, plan, seed, notes)
        for own in clips:
            assert own.shuffled_actions is not None, notes
            assert not np.array_equal(own.shuffled_actions, own.actions[2:])
    clips = [clip(forward), clip(forward)]
    notes = []
    _assign_shuffled(clips, plan, 0, notes)
    assert all(c.shuffled_actions is None for c in clips)
    assert notes == ["2 keys clip(s) have no other clip with different actions: no shuffled-actions baseline for them"]


def test_a_bad_device_or_output_path_fails_before_the_evaluation(tmp_path, checkpoint, sim_bags, capsys):
    rc, err = _run([str(sim_bags["explore"]), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                    "--device", "cuda:0"], capsys)
    if not torch.cuda.is_available():
        assert rc == 2 and "no usable CUDA GPU" in err and "Traceback" not in err
    rc, err = _run([str(sim_bags["explore"]), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                    "--device", "gpu please"], capsys)
    assert rc == 2 and "is not a torch device" in err
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    rc, err = _run([str(sim_bags["explore"]), "--checkpoint", str(checkpoint), "--out", str(a_file)], capsys)
    assert rc == 2 and "cannot be used as the output directory" in err and "Traceback" not in err


def _run(args, capsys):
    rc = main(args)
    return rc, capsys.readouterr().err


def test_missing_topic_lists_the_bags_topics(tmp_path, checkpoint, sim_bags, capsys):
    rc, err = _run([str(sim_bags["explore"]), "--checkpoint", str(checkpoint), "--out", str(tmp_path),
                    "--image-topic", "/nope/image"], capsys)
    assert rc == 2
    assert "/nope/image" in err and "/camera/image_raw" in err and "/camera/pose" in err
    assert len(err.strip().splitlines()) == 1


def test_every_missing_topic_of_every_bag_is_named_in_one_error(tmp_path, checkpoint, sim_bags, capsys):
    bags = [str(sim_bags["explore"]), str(sim_bags["rover"])]
    rc, err = _run([*bags, "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--modality", "camera",
                    "--image-topic", "/nope/image", "--pose-topic", "/nope/pose", "--quiet"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for bag in bags:  # both bags, each with both topics it lacks
        assert f"bag {bag} has no topic '/nope/image' nor '/nope/pose', needed for modality 'camera'" in err


def test_the_grid_shows_every_scenario_not_the_first_clips():
    def clip(scenario):
        return ClipResult("bag", 0, 0, "camera", np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 4, 4, 3), np.uint8),
                          np.zeros((2, 12), np.float32), scenario=scenario)

    clips = [clip("explore")] * 6 + [clip("arm")] * 3 + [clip("rover")]
    assert [c.scenario for c in grid_clips(clips)] == ["arm", "explore", "rover", "arm"]
    many = [clip(f"s{i}") for i in range(6)]  # more scenarios than grid rows: one of each
    assert len(grid_clips(many)) == 6


def test_saved_frames_hold_every_clip_and_recompute_the_dynamics(tmp_path, checkpoint, sim_bags, capsys):
    out, frames = tmp_path / "out", tmp_path / "frames"
    rc = main([str(sim_bags["explore"]), str(sim_bags["rover"]), "--checkpoint", str(checkpoint), "--out", str(out),
               "--horizon-s", "1.2", "--context-frames", "2", "--stride-s", "0.5", "--clips-per-bag", "2",
               "--save-frames", str(frames), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    files = sorted(frames.glob("*.npz"))
    assert len(files) == metrics["clips"] == 4 and metrics["frames_files"] == [f.name for f in files]
    saved = [load_clip_frames(f) for f in files]
    for data, window in zip(saved, metrics["clip_windows"]):
        assert data["observed_last"].shape == (32, 32, 3)  # the model's resolution, not the bags' 64x64
        for name in ("real", "model", "shuffled", "ceiling"):
            assert data[name].shape == (12, 32, 32, 3) and data[name].dtype == np.uint8
        assert data["scenario"] == window["scenario"] and data["start_frame"] == window["start_frame"]
    # Anyone can recompute the metrics from the files: here all of metrics["dynamics"], exactly.
    recomputed = dynamics_summary([clip_errors(d["observed_last"], d["real"], d["model"], d["shuffled"],
                                               d["scenario"], ceiling=d["ceiling"]) for d in saved],
                                  saved[0]["frame_interval_s"], seed=0)
    dynamics = metrics["dynamics"]
    # The codec ceiling beside the model: a random model's codec still round-trips better than its predictions.
    assert dynamics["overall"]["pooled_psnr"]["ceiling_gain"] > dynamics["overall"]["pooled_psnr"]["gain"]
    assert json.loads(write_metrics_json(recomputed, tmp_path / "again.json").read_text()) == dynamics
    # 1.2 s: second 1 has frames 0.1-1.0 s, second 2 the two frames at 1.1 and 1.2 s.
    assert [(s["second"], s["frames"]) for s in dynamics["overall"]["per_second"]] == [(1, 10), (2, 2)]
    assert (out / "per_second.png").stat().st_size > 0 and "per_second.png" in (out / "report.md").read_text()
    assert set(dynamics["per_scenario"]) == {"explore", "rover"}
    for row in [dynamics["overall"], *dynamics["per_scenario"].values()]:
        lo, hi = row["pooled_psnr"]["gain_ci95"]
        assert lo <= row["pooled_psnr"]["gain"] <= hi
        assert row["action_sensitivity_ci95"][0] <= row["action_sensitivity"] <= row["action_sensitivity_ci95"][1]
    # The random model predicts noise: worse than copying, also where the scene changed.
    assert dynamics["overall"]["pooled_psnr"]["gain"] < 0 and dynamics["overall"]["changed_psnr"]["gain"] < 0
    # The pooled PSNR is that of the pooled MSE, recomputed from the frames by hand.
    se = sum(((d["model"].astype(float) - d["real"]) ** 2).sum() for d in saved)
    pixels = sum(d["real"].size for d in saved)
    assert dynamics["overall"]["pooled_psnr"]["model"] == pytest.approx(10 * np.log10(255**2 * pixels / se))
    # Run again into the same folders with fewer clips and a 1 s horizon: nothing of the first run is left to
    # be read as this one's (the folder's scripts take every clip file; the report links every figure).
    rc = main([str(sim_bags["rover"]), "--checkpoint", str(checkpoint), "--out", str(out), "--horizon-s", "1",
               "--context-frames", "2", "--stride-s", "0.5", "--clips-per-bag", "2", "--save-frames", str(frames),
               "--quiet"])
    assert rc == 0, capsys.readouterr().err
    again = json.loads((out / "metrics.json").read_text())
    assert sorted(f.name for f in frames.glob("*.npz")) == again["frames_files"] == ["clip_0000.npz", "clip_0001.npz"]
    assert f"removed 2 clip file(s) of an earlier run from {frames}" in again["notes"]
    assert not (out / "per_second.png").exists() and "per_second.png" not in (out / "report.md").read_text()


def test_modality_mismatch(tmp_path, sim_bags, capsys):
    camera_only = WorldModel(preset("tiny", resolution=(32, 32), modalities={"camera": 12}))
    ckpt = camera_only.save_pretrained(tmp_path / "camera_ckpt")
    rc, err = _run([str(sim_bags["rover"]), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2
    assert f"bag {sim_bags['rover']} gives 'twist' actions but the checkpoint knows ['camera']" in err


def test_missing_and_corrupt_checkpoint(tmp_path, sim_bags, checkpoint, capsys):
    rc, err = _run([str(sim_bags["explore"]), "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path)], capsys)
    assert rc == 2 and "checkpoint" in err and "does not exist" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((checkpoint / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    rc, err = _run([str(sim_bags["explore"]), "--checkpoint", str(broken), "--out", str(tmp_path)], capsys)
    assert rc == 2 and "model.safetensors" in err


def test_missing_empty_and_too_short_bags(tmp_path, checkpoint, sim_bags, capsys):
    base = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--quiet"]
    rc, err = _run([str(sim_bags["explore"]), str(tmp_path / "no_such_bag"), *base], capsys)
    assert rc == 2 and "no_such_bag" in err and "does not exist" in err
    empty = write_foreign_bag(tmp_path / "empty", messages=False)
    rc, err = _run([str(empty), "--image-topic", "/front/color", "--twist-topic", "/base/cmd", *base], capsys)
    assert rc == 2 and "empty" in err
    rc, err = _run([str(sim_bags["explore"]), "--horizon-s", "5", *base], capsys)
    assert rc == 2 and "no usable clip" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_flow_motion_estimator_finds_more_real_motions_and_is_recorded(checkpoint, sim_bags):
    model = WorldModel.from_pretrained(checkpoint)
    found = {}
    for estimator in ("sift", "flow"):
        options = EvalOptions(horizon_s=0.4, context_frames=4, stride_s=0.5, clips_per_bag=3, progress=False,
                              motion_estimator=estimator)
        result = evaluate_bags(model, [sim_bags["explore"]], options)
        assert result.metrics["motion_estimator"] == estimator
        found[estimator] = result.metrics["rotation_paired"]["ground_truth_defined"]
    # The explore camera turns: a still camera's error (the true angle) is recorded wherever the motion is known.
    true_angle = np.concatenate([clip.scores["rot_true"][clip.scores["motion_known"]] for clip in result.clips])
    assert len(true_angle) > 0 and (true_angle > 0).all()
    # The codec ceiling's frames were handed to the estimator as well (a random codec: it may find nothing).
    assert all(len(clip.scores["rot_codec_ceiling"]) == len(clip.real) for clip in result.clips)
    assert "codec_ceiling" in result.metrics["rotation_paired"]
    assert found["flow"] >= 0.5 and found["flow"] > found["sift"], found
    with pytest.raises(EvalError, match="motion estimator"):
        EvalOptions(motion_estimator="orb")



@pytest.mark.parametrize("options, message", [
    (dict(horizon_s=float("inf")), "horizon must be positive and finite"),
    (dict(stride_s=float("nan")), "stride must be positive and finite"),
    (dict(intrinsics=(50.0, float("nan"), 16.0, 16.0)), "intrinsics must be finite"),
])
def test_non_finite_options_are_refused_before_any_bag_is_read(options, message):
    # inf used to pass and overflow later while planning the clips; NaN intrinsics passed silently.
    with pytest.raises(EvalError, match=message):
        EvalOptions(**options)

def test_rotation_paired_compares_model_and_real_frames_on_the_same_pairs():
    """The per-horizon table averages each side over the pairs where its own estimate worked; the
    paired summary uses only pairs where both did, and says how often each worked."""
    from types import SimpleNamespace

    nan = np.nan
    camera = SimpleNamespace(scores={"rot_model": np.array([1.0, nan, 3.0]), "rot_ground_truth": np.array([0.5, 0.5, nan]),
                                     "rot_codec_ceiling": np.array([nan, 2.0, 1.0]),
                                     "rot_true": np.array([4.0, 5.0, 6.0]), "motion_known": np.array([True, True, True])})
    no_poses = SimpleNamespace(scores={"rot_model": np.full(3, nan), "rot_ground_truth": np.full(3, nan),
                                       "rot_codec_ceiling": np.full(3, nan), "rot_true": np.full(3, nan),
                                       "motion_known": np.zeros(3, bool)})
    paired = rotation_paired([camera, no_poses])
    assert paired["pairs"] == 1
    assert paired["model_deg"] == pytest.approx(1.0) and paired["ground_truth_deg"] == pytest.approx(0.5)
    assert paired["ratio"] == pytest.approx(2.0)
    assert paired["still_deg"] == pytest.approx(4.0)  # the true rotation of that one pair: a still camera's error
    # The codec ceiling is paired with the real frames on its own pairs (here the second one).
    assert paired["codec_ceiling"] == pytest.approx({"pairs": 1, "deg": 2.0, "ground_truth_deg": 0.5, "still_deg": 5.0})
    # Only the three pairs with a known true motion count towards how often the estimator worked.
    assert paired["model_defined"] == pytest.approx(2 / 3) and paired["ground_truth_defined"] == pytest.approx(2 / 3)
    # Without codec-ceiling estimates (no reconstruction) the model/real summary is unchanged.
    camera.scores["rot_codec_ceiling"] = np.full(3, nan)
    alone = rotation_paired([camera])
    assert alone["ratio"] == pytest.approx(2.0) and alone["codec_ceiling"]["pairs"] == 0
    nothing = rotation_paired([no_poses])
    assert nothing["pairs"] == 0 and nothing["model_deg"] is None and nothing["still_deg"] is None
    assert nothing["codec_ceiling"]["pairs"] == 0 and nothing["codec_ceiling"]["deg"] is None
    assert nothing["model_defined"] is None


def test_a_model_that_turns_its_views_gets_each_bags_intrinsics(sim_bags):
    from astra_ros.data.bags import read_episode
    from astra_ros.eval.replay import EvalOptions, evaluate_bags

    model = WorldModel(preset("tiny", resolution=(32, 32), latent_delta=True, prediction="x0",
                             residual_decoding=True, rotation_reference=True))
    seen = []
    set_intrinsics = model.set_intrinsics
    model.set_intrinsics = lambda K: (seen.append(None if K is None else np.array(K)), set_intrinsics(K))[1]
    bags = [sim_bags["explore"], sim_bags["rover"]]
    evaluate_bags(model, bags, EvalOptions(progress=False, max_clips=4, clips_per_bag=2))
    expected = [read_episode(bag, resolution=(32, 32)).camera_info.matrix() for bag in bags]
    assert len(seen) == 4 and all(K is not None for K in seen)
    assert {tuple(K.round(6).ravel()) for K in seen} == {tuple(K.round(6).ravel()) for K in expected}
    # --fx-fy-cx-cy overrides the bags' camera_info, scaled from the size it names to the model's.
    seen.clear()
    evaluate_bags(model, bags, EvalOptions(progress=False, max_clips=2, clips_per_bag=1,
                                           intrinsics=(64.0, 64.0, 31.5, 31.5), intrinsics_size=(64, 64)))
    assert all(np.allclose(K, [[32.0, 0, 15.5], [0, 32.0, 15.5], [0, 0, 1]]) for K in seen) and len(seen) == 2
