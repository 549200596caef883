"""Planner imagination (sub-batches, decoding only some frames), the CEM core on a known problem, plan_eval --quick."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from astra_ros.model import WorldModel, preset
from astra_ros.planning.cem import ActionEncoder, CEMConfig, CEMPlanner, GoalScorer, PlanSchedule, shuffle_candidates
from repo_scripts import load_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = WorldModel(preset("tiny", resolution=(32, 32)))
    with torch.no_grad():  # the action projections start at zero; make this random model follow its actions
        for name, parameter in model.transformer.named_parameters():
            if "action_proj" in name:
                parameter.normal_(0.0, 3.0)
    rng = np.random.default_rng(0)
    model.start(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), rng.normal(0, 0.05, (4, 6)).astype(np.float32),
                modality="twist")
    return model


def _actions(batch, horizon, seed=1):
    return np.random.default_rng(seed).normal(0, 0.1, (batch, horizon, 6)).astype(np.float32)


@pytest.mark.parametrize("shared_noise", [True, False])
def test_imagine_split_into_sub_batches_equals_one_batch(tiny, shared_noise):
    actions = _actions(7, 5)  # 5 frames: the last chunk is padded
    whole = tiny.imagine(actions, seed=3, shared_noise=shared_noise, max_batch=7).astype(int)
    split = tiny.imagine(actions, seed=3, shared_noise=shared_noise, max_batch=3).astype(int)
    assert whole.shape == split.shape == (7, 5, 32, 32, 3)
    assert np.abs(whole - split).max() <= 1  # float rounding of different batch sizes only
    assert np.abs(whole - split).mean() < 0.02
    # The candidates differ by more than that (so a split that mixed them up would show), and the seed matters.
    assert np.abs(whole[0] - whole[6]).mean() > (0.1 if shared_noise else 0.5)
    other_seed = tiny.imagine(actions, seed=4, shared_noise=shared_noise, max_batch=3).astype(int)
    assert np.abs(other_seed - split).mean() > 0.5


def test_imagine_decodes_only_the_requested_frames(tiny):
    actions = _actions(4, 6)
    everything = tiny.imagine(actions, seed=5, shared_noise=True)
    last = tiny.imagine(actions, seed=5, shared_noise=True, decode="last")
    picked = tiny.imagine(actions, seed=5, shared_noise=True, decode=[1, 4], max_batch=2)
    assert last.shape == (4, 1, 32, 32, 3)
    assert np.abs(last[:, 0].astype(int) - everything[:, -1]).max() <= 1
    assert np.abs(picked.astype(int) - everything[:, [1, 4]]).max() <= 1
    with pytest.raises(ValueError, match="decode"):
        tiny.imagine(actions, decode=[6])
    with pytest.raises(ValueError, match="max_batch"):
        tiny.imagine(actions, max_batch=0)
    with pytest.raises(ValueError, match="steps"):
        tiny.imagine(actions, steps=0)


def test_imagine_steps_override_changes_the_sampling(tiny):
    actions = _actions(2, 2)
    a = tiny.imagine(actions, seed=1, shared_noise=True, steps=1).astype(int)
    b = tiny.imagine(actions, seed=1, shared_noise=True, steps=3).astype(int)
    assert np.abs(a - b).mean() > 0.5


def test_default_imagine_batch_is_a_memory_estimate(tiny):
    default = WorldModel(preset("cpu_default"))
    assert 1 <= default.default_imagine_batch() <= 256
    # more memory per candidate (guidance doubles the transformer, more frames decoded): fewer at once
    assert default.default_imagine_batch(guidance_scale=3.0, decoded_frames=8) < default.default_imagine_batch(1.0, 1)


def _stripes(plans_per_frame: np.ndarray, steps: int, fps: int) -> np.ndarray:
    """A toy world: the last frame shows one vertical stripe per plan step, coloured by its (v, w)."""
    b = plans_per_frame.shape[0]
    frames = np.zeros((b, 1, 16, 8 * steps, 3), np.uint8)
    for k in range(steps):
        row = plans_per_frame[:, k * fps]  # twist rows: v*dt at 0, w*dt at 5
        v, w = row[:, 0] / 0.1, row[:, 5] / 0.1
        frames[:, 0, :, 8 * k:8 * (k + 1), 0] = np.clip(128 + 150 * v, 0, 255)[:, None, None]
        frames[:, 0, :, 8 * k:8 * (k + 1), 1] = np.clip(128 + 100 * w, 0, 255)[:, None, None]
    return frames


def test_cem_finds_the_known_best_plan():
    steps, fps = 3, 2
    target = np.array([[0.3, -0.5], [0.1, 0.6], [0.45, 0.0]])  # (v, w) per step
    config = CEMConfig(horizon_steps=steps, frames_per_step=fps, candidates=48, elites=6, iterations=8)
    encoder = ActionEncoder("twist", 0.1, fps)
    goal = _stripes(encoder(target[None]), steps, fps)[0, 0]
    calls = []

    def imagine(actions):
        calls.append(actions.shape)
        return _stripes(actions, steps, fps)

    planner = CEMPlanner(config, imagine, encoder, rng=np.random.default_rng(0))
    result = planner.plan(GoalScorer(goal, score_size=8 * steps))
    assert calls == [(48, 6, 6)] * 8
    np.testing.assert_allclose(result.plan, target, atol=0.06)
    assert result.elite_score_per_iteration[-1] < 0.1 * result.elite_score_per_iteration[0]
    # Warm start: the next call starts from the plan shifted by one step.
    mean, _ = planner.initial_distribution()
    np.testing.assert_allclose(mean, np.concatenate([result.plan[1:], result.plan[-1:]]))
    # Limits are respected even when the goal lies outside them.
    far = _stripes(encoder(np.full((1, steps, 2), [0.9, 1.2])), steps, fps)[0, 0]
    planner.reset()
    clipped = planner.plan(GoalScorer(far, score_size=8 * steps)).plan
    assert clipped[:, 0].max() <= 0.6 + 1e-9 and clipped[:, 1].max() <= 1.0 + 1e-9
    assert clipped[:, 0].min() > 0.5 and clipped[:, 1].min() > 0.75  # pushed against the limits


def test_warm_start_drops_the_steps_executed_since():
    config = CEMConfig(horizon_steps=4, frames_per_step=2, candidates=4, elites=2, iterations=1)
    planner = CEMPlanner(config, None, ActionEncoder("twist", 0.1, 2))
    previous = np.array([[0.1, 0.0], [0.2, 0.1], [0.3, 0.2], [0.4, 0.3]])
    planner._previous = previous
    np.testing.assert_allclose(planner.initial_distribution(0)[0], previous)
    np.testing.assert_allclose(planner.initial_distribution(2)[0], previous[[2, 3, 3, 3]])
    np.testing.assert_allclose(planner.initial_distribution(9)[0], previous[[3, 3, 3, 3]])  # beyond the plan
    with pytest.raises(ValueError, match="steps_done"):
        planner.initial_distribution(-1)
    # plan() starts from that shift: with one iteration and zero std, its mean is the shifted plan
    planner.config = dataclasses.replace(config, warm_start_std=(0.0, 0.0), min_std=(0.0, 0.0), smoothing=0.0)
    result = planner.plan(lambda frames: np.zeros(len(frames)), imagine=lambda a: np.zeros((len(a), 1, 4, 4, 3), np.uint8),
                          steps_done=1)
    np.testing.assert_allclose(result.plan, previous[[1, 2, 3, 3]])


def test_plan_schedule_runs_each_step_for_its_time_then_nothing():
    plan = np.array([[0.1, 0.0], [0.2, 0.5], [0.3, -0.5]])
    schedule = PlanSchedule(plan, start_s=10.0, step_s=0.2)
    assert schedule.duration_s == pytest.approx(0.6)
    due = [schedule.command_at(t) for t in (9.9, 10.0, 10.19, 10.2, 10.45, 10.599)]
    np.testing.assert_allclose(np.stack(due), plan[[0, 0, 0, 1, 2, 2]])
    assert schedule.command_at(10.6) is None and schedule.command_at(12.0) is None
    assert [schedule.steps_done(t) for t in (9.0, 10.0, 10.21, 10.6, 11.0)] == [0, 0, 1, 3, 5]
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="step_s"):
            PlanSchedule(plan, 0.0, bad)


def test_cem_with_shuffled_imagination_does_not_find_it():
    """The ablation of the evaluation: imagination that does not match the plans carries no information."""
    steps, fps = 2, 2
    target = np.array([[0.4, -0.7], [0.4, -0.7]])
    config = CEMConfig(horizon_steps=steps, frames_per_step=fps, candidates=32, elites=4, iterations=6)
    encoder = ActionEncoder("twist", 0.1, fps)
    goal = _stripes(encoder(target[None]), steps, fps)[0, 0]
    errors = {}
    for name, transform in (("true", None), ("shuffled", shuffle_candidates)):
        rng = np.random.default_rng(1)
        imagine = (lambda a, t=transform, r=rng: _stripes(a if t is None else t(a, r), steps, fps))
        plan = CEMPlanner(config, imagine, encoder, rng=np.random.default_rng(2)).plan(GoalScorer(goal, 16)).plan
        errors[name] = float(np.abs(plan - target).mean())
    assert errors["true"] < 0.05 < errors["shuffled"]


def test_each_plan_can_bring_its_own_imagine():
    """The planner node gives every plan an imagine bound to that plan's noise seed."""
    config = CEMConfig(horizon_steps=1, frames_per_step=2, candidates=4, elites=2, iterations=2)
    encoder = ActionEncoder("twist", 0.1, 2)
    planner = CEMPlanner(config, None, encoder, rng=np.random.default_rng(0))
    goal = _stripes(encoder(np.zeros((1, 1, 2))), 1, 2)[0, 0]
    with pytest.raises(ValueError, match="needs an imagine"):
        planner.plan(GoalScorer(goal, 8))
    seen = []

    def imagine_with(seed):
        def imagine(actions):
            seen.append(seed)
            return _stripes(actions, 1, 2)
        return imagine

    planner.plan(GoalScorer(goal, 8), imagine=imagine_with(7))
    planner.plan(GoalScorer(goal, 8), imagine=imagine_with(8))
    assert seen == [7, 7, 8, 8]


def test_action_encoder_twist_and_keys_rows():
    plans = np.array([[[0.5, 0.0], [0.0, -0.8]]])
    twist = ActionEncoder("twist", 0.1, 2)(plans)
    np.testing.assert_allclose(twist[0, :, 0], [0.05, 0.05, 0.0, 0.0])
    np.testing.assert_allclose(twist[0, :, 5], [0.0, 0.0, -0.08, -0.08])
    keys = ActionEncoder("keys", 0.1, 2)(plans)
    assert keys.shape == (1, 4, 7)
    assert keys[0, 0].argmax() == 0 and keys[0, 2].argmax() == 5  # forward, then turn_right
    with pytest.raises(ValueError, match="twist"):
        ActionEncoder("camera")


def test_goal_scorer_prefers_the_goal_image():
    rng = np.random.default_rng(0)
    goal = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    shifted = np.roll(goal, 16, axis=1)
    frames = np.stack([shifted, goal, 255 - goal])[:, None]
    scores = GoalScorer(goal)(frames)
    assert scores.argmin() == 1 and scores[1] == 0.0 and scores[2] > scores[0]


def test_plan_eval_quick_writes_the_contract_keys(tmp_path):
    plan_eval = load_script("bench/plan_eval.py")
    out = tmp_path / "plan.json"
    plan_eval.main(["--quick", "--episodes", "1", "--seed", "9000", "--checkpoint", "random:tiny", "--size", "32",
                    "--out", str(out), "--no-plot"])
    result = json.loads(out.read_text())
    assert result["episodes"] == 1
    for key in ("success_rate", "mean_steps"):
        assert set(result[key]) >= {"cem", "random", "shuffled_actions"}
    assert all(0.0 <= v <= 1.0 for v in result["success_rate"].values())
    episode = result["per_episode"][0]
    assert len(episode["methods"]["cem"]["per_step"]) == result["settings"]["steps"]
    assert episode["goal_offset_deg"] >= 17.0  # the start is never a pose success


def test_a_keys_plan_sends_the_key_the_model_was_shown():
    """The planner searches (v, w), but with keys the model sees only the dominant key: sending the raw
    (v, w) would turn the robot while the imagined future drove straight."""
    keys = ActionEncoder("keys", 0.1, 2)  # thresholds 0.05 m/s, 0.15 rad/s
    twist = ActionEncoder("twist", 0.1, 2)
    cases = {(0.226, 0.271): (0.226, 0.0), (0.02, -0.5): (0.0, -0.5), (0.01, 0.1): (0.0, 0.0), (-0.3, 0.2): (-0.3, 0.0)}
    for command, sent in cases.items():
        assert keys.command_as_imagined(np.array(command)) == pytest.approx(sent)
        # what is sent shows the model the same key as the plan it scored
        np.testing.assert_array_equal(keys(np.array([[sent]])), keys(np.array([[command]])))
        assert twist.command_as_imagined(np.array(command)) == pytest.approx(command)
