"""Goal reaching in the simulator: the CEM planner through the world model against baselines.

    python bench/plan_eval.py --episodes 16 --seed 9000 --out bench/results/plan_eval.json

In-process (no ROS): the ``rover`` scenario of the simulator (seeds from ``--seed`` on; training
used 100-123) and a world model (``--checkpoint``) with the planner core of
:mod:`astra_ros.planning.cem`, the same code the ``astra_planner`` node runs through ``~/imagine``.

One episode: the rover creeps forward for ``--context-frames`` camera frames (the model's
observed history; start state S). The goal: from S, a random command (v ~ U(0.1, 0.5) m/s, yaw
rate +-U(0.3, 0.9) rad/s) held for ``--goal-frames`` frames; the view there is the goal image and
its pose the goal pose; then the rover is put back to S. Every method then gets ``--steps`` steps
from S; a step plans one command (v, w), which the simulator executes for ``frames_per_step``
frames. Methods:

* ``cem``: CEM over (v, w) plans; candidates imagined by the model (shared noise), scored by the
  16x16 pixel MSE of the imagined last frame to the goal image.
* ``shuffled_actions``: the same planner, but the model imagines each candidate with another
  candidate's actions (imagination carries no information about the plan it is scored for);
  ``zero_actions`` (with ``--zero-baseline``): the model imagines every candidate with zero actions.
* ``random``: a uniformly random command within the limits at every step.
* ``oracle``: the same CEM, but the candidates' futures are rendered by the simulator itself (a
  perfect world model): the ceiling for this planner, scorer and budget.

Success (fixed before the runs, the same for every method): the episode succeeds at the first
step where the camera view is close to the goal view, ``d(view, goal) <= 0.5 * d(start view, goal)``
with d the same 16x16 pixel MSE (so the start view is never a success), and, separately reported,
where the pose is close to the goal pose (position within 0.2 m and heading within 10 deg; the goal
poses are >= 17 deg of heading from the start, so the start is never a pose success). ``steps`` is
that first step: ``mean_steps`` averages it over the successful episodes (None without any),
``mean_steps_with_failures`` over all episodes with a failure counted as the budget ``--steps``. Final-step figures (without stopping at
the first success) are in ``final_success_rate``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from astra_ros.data.scenes import BodyTwist, RoverScenario, SimSettings  # noqa: E402
from astra_ros.planning.cem import (  # noqa: E402
    ActionEncoder,
    CEMConfig,
    CEMPlanner,
    GoalScorer,
    model_imagine,
    shuffle_candidates,
    zero_actions,
)

CAMERA_HZ = 10
TICKS_PER_FRAME = 3  # the scenario's 30 Hz state ticks per 10 Hz camera frame
VIEW_RATIO = 0.5  # view success: d(view, goal) <= VIEW_RATIO * d(start, goal)
POSE_POSITION_M = 0.2  # pose success: within this distance of the goal position ...
POSE_HEADING_DEG = 10.0  # ... and this heading
MODEL_METHODS = ("cem", "shuffled_actions", "zero_actions")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=12)
    p.add_argument("--seed", type=int, default=9000, help="first held-out scene seed (training used 100-123)")
    p.add_argument("--out", type=Path, default=Path("bench/results/plan_eval.json"))
    p.add_argument("--checkpoint", default="default", help="'default', a directory, or 'random:<preset>'")
    p.add_argument("--steps", type=int, default=8, help="planning steps per episode (the budget)")
    p.add_argument("--goal-frames", type=int, default=10, help="frames the goal command is held (1 s at 10 Hz)")
    p.add_argument("--context-frames", type=int, default=4, help="observed frames the model starts from")
    p.add_argument("--candidates", type=int, default=12)
    p.add_argument("--elites", type=int, default=3)
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--horizon-steps", type=int, default=3, help="plan length in steps (x frames_per_step frames)")
    p.add_argument("--denoise-steps", type=int, default=None, help="Euler steps per imagined chunk (default: the model's)")
    p.add_argument("--draft", action=argparse.BooleanOptionalAction, default=True,
                   help="imagine on the fast path (references turned in latents, plain codec decoding); "
                        "--no-draft: the full path")
    p.add_argument("--guidance", type=float, default=1.0, help="guidance scale of the imagination (1 = off)")
    p.add_argument("--zero-baseline", action="store_true", help="also run CEM imagining with zero actions")
    p.add_argument("--no-oracle", action="store_true", help="skip the simulator-imagination ceiling")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--size", type=int, default=128, help="rendered image size [px] (square)")
    p.add_argument("--quick", action="store_true", help="a tiny run (< 1 min): 2 episodes, 3 steps, 8 candidates")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.episodes, args.steps, args.candidates, args.elites = min(args.episodes, 2), 3, 8, 2
        args.iterations = 1
    return args


# ------------------------------------------------------------------------------------------ simulator
class Rover:
    """The rover scenario driven step by step, with its state saved and restored (goal views, oracle)."""

    def __init__(self, seed: int, size: int) -> None:
        self.scene = RoverScenario(seed, SimSettings(seconds=1e6, image_width=size, image_height=size))
        self.drive(0.0, 0.0)

    def drive(self, v: float, w: float) -> None:
        self.scene.set_command(BodyTwist(np.array([v, 0.0, 0.0]), np.array([0.0, 0.0, w])))

    def frame(self, v: float, w: float, render: bool = True) -> np.ndarray | None:
        """Hold (v, w) for one camera interval; the view at its end."""
        self.drive(v, w)
        for _ in range(TICKS_PER_FRAME):
            self.scene.advance(1.0 / (CAMERA_HZ * TICKS_PER_FRAME))
        return self.scene.render() if render else None

    def save(self) -> tuple:
        r = self.scene.rig
        return r.position.copy(), r.yaw, r.pitch, r.command, r.external

    def restore(self, state: tuple) -> None:
        r = self.scene.rig
        r.position, r.yaw, r.pitch, r.command, r.external = state[0].copy(), *state[1:]
        self.scene._place_rig()

    def pose(self) -> tuple[np.ndarray, float]:
        return self.scene.rig.position[:2].copy(), float(self.scene.rig.yaw)

    def close(self) -> None:
        self.scene.close()


def pose_error(pose: tuple[np.ndarray, float], goal: tuple[np.ndarray, float]) -> tuple[float, float]:
    """(position error [m], heading error [deg])."""
    heading = (pose[1] - goal[1] + np.pi) % (2 * np.pi) - np.pi
    return float(np.linalg.norm(pose[0] - goal[0])), float(abs(np.degrees(heading)))


def sim_imagine(rover: Rover, frames_per_step: int) -> Callable[[np.ndarray], np.ndarray]:
    """The oracle's imagination: each candidate executed in the simulator from the current state, last view."""
    dt = 1.0 / CAMERA_HZ

    def imagine(actions: np.ndarray) -> np.ndarray:
        start = rover.save()
        out = []
        for rows in actions:  # twist rows: [v*dt, 0, 0, 0, 0, w*dt] per frame
            rover.restore(start)
            for i, row in enumerate(rows):
                view = rover.frame(row[0] / dt, row[5] / dt, render=i == len(rows) - 1)
            out.append(view[None])
        rover.restore(start)
        return np.stack(out)

    return imagine


# ------------------------------------------------------------------------------------------ episodes
@dataclass
class Goal:
    command: tuple[float, float]
    image: np.ndarray
    pose: tuple[np.ndarray, float]


def make_goal(rover: Rover, rng: np.random.Generator, frames: int) -> Goal:
    start = rover.save()
    command = (float(rng.uniform(0.1, 0.5)), float(rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.9)))
    for _ in range(frames):
        image = rover.frame(*command)
    goal = Goal(command, image, rover.pose())
    rover.restore(start)
    return goal


def run_method(method: str, rover: Rover, start: tuple, context: tuple[list, list], goal: Goal,
               args: argparse.Namespace, model: Any, config: CEMConfig, encoder: ActionEncoder,
               rng: np.random.Generator) -> dict[str, Any]:
    """Drive ``args.steps`` steps from ``start`` with ``method``; per-step view and pose errors."""
    rover.restore(start)
    frames, actions = list(context[0]), list(context[1])
    scorer = GoalScorer(goal.image)
    planner = None
    if method != "random":
        if method == "oracle":
            imagine = sim_imagine(rover, config.frames_per_step)
        else:
            transform = {"cem": None, "shuffled_actions": shuffle_candidates, "zero_actions": zero_actions}[method]
            imagine = model_imagine(model, seed=int(rng.integers(2**31)), steps=args.denoise_steps,
                                    guidance_scale=args.guidance, decode="last", draft=args.draft, transform=transform, rng=rng)
        planner = CEMPlanner(config, imagine, encoder, rng=rng)
    d0 = float(scorer.distance(frames[-1]))
    rows = []
    plan_s = 0.0
    for step in range(args.steps):
        began = time.perf_counter()
        if planner is None:
            command = rng.uniform(config.low, config.high)
        else:
            if method != "oracle":
                model.start(np.stack(frames[-args.context_frames:]), np.stack(actions[-args.context_frames:]),
                            modality="twist")
            command = planner.plan(scorer).command
        plan_s += time.perf_counter() - began
        step_actions = encoder(np.asarray(command)[None, None])[0]  # (frames_per_step, 6)
        for row in step_actions:
            frames.append(rover.frame(float(command[0]), float(command[1])))
            actions.append(row)
        position_m, heading_deg = pose_error(rover.pose(), goal.pose)
        d = float(scorer.distance(frames[-1]))
        rows.append({"step": step + 1, "command": [float(c) for c in command], "view_ratio": d / d0,
                     "position_error_m": position_m, "heading_error_deg": heading_deg})
    return {"d_start": d0, "per_step": rows, "plan_s": plan_s}


def first_success(per_step: list[dict], criterion: Callable[[dict], bool]) -> int | None:
    return next((r["step"] for r in per_step if criterion(r)), None)


def view_ok(row: dict) -> bool:
    return row["view_ratio"] <= VIEW_RATIO


def pose_ok(row: dict) -> bool:
    return row["position_error_m"] <= POSE_POSITION_M and row["heading_error_deg"] <= POSE_HEADING_DEG


def summarise(episodes: list[dict], methods: list[str], budget: int) -> dict[str, Any]:
    out: dict[str, Any] = {"success_rate": {}, "mean_steps": {}, "mean_steps_with_failures": {},
                           "pose_success_rate": {}, "pose_mean_steps": {}, "final_success_rate": {},
                           "final_pose_success_rate": {}, "mean_final_view_ratio": {}, "mean_final_position_error_m": {},
                           "mean_final_heading_error_deg": {}, "mean_plan_s_per_step": {}}
    for m in methods:
        runs = [e["methods"][m] for e in episodes]
        view_steps = [first_success(r["per_step"], view_ok) for r in runs]
        pose_steps = [first_success(r["per_step"], pose_ok) for r in runs]
        ok = [s for s in view_steps if s is not None]
        out["success_rate"][m] = len(ok) / len(runs)
        out["mean_steps"][m] = float(np.mean(ok)) if ok else None
        out["mean_steps_with_failures"][m] = float(np.mean([budget if s is None else s for s in view_steps]))
        out["pose_success_rate"][m] = sum(s is not None for s in pose_steps) / len(runs)
        out["pose_mean_steps"][m] = float(np.mean([budget if s is None else s for s in pose_steps]))
        finals = [r["per_step"][-1] for r in runs]
        out["final_success_rate"][m] = float(np.mean([view_ok(f) for f in finals]))
        out["final_pose_success_rate"][m] = float(np.mean([pose_ok(f) for f in finals]))
        out["mean_final_view_ratio"][m] = float(np.mean([f["view_ratio"] for f in finals]))
        out["mean_final_position_error_m"][m] = float(np.mean([f["position_error_m"] for f in finals]))
        out["mean_final_heading_error_deg"][m] = float(np.mean([f["heading_error_deg"] for f in finals]))
        out["mean_plan_s_per_step"][m] = float(np.mean([r["plan_s"] for r in runs]) / budget)
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = result["methods"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(methods))
    axes[0].bar(x - 0.2, [result["success_rate"][m] for m in methods], 0.4, label="view reached")
    axes[0].bar(x + 0.2, [result["pose_success_rate"][m] for m in methods], 0.4, label="pose reached")
    axes[0].set_xticks(x, methods, rotation=15)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("success rate")
    axes[0].legend()
    axes[0].set_title(f"{result['episodes']} episodes, {result['settings']['steps']} steps each")
    for m in methods:
        ratios = np.array([[r["view_ratio"] for r in e["methods"][m]["per_step"]] for e in result["per_episode"]])
        axes[1].plot(np.arange(1, ratios.shape[1] + 1), np.median(ratios, axis=0), marker="o", label=m)
    axes[1].axhline(VIEW_RATIO, color="gray", ls="--", lw=1, label="success threshold")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("d(view, goal) / d(start, goal), median")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    from astra_ros.model import load_world_model

    model = load_world_model(args.checkpoint)
    fps = model.frames_per_chunk
    config = CEMConfig(horizon_steps=args.horizon_steps, frames_per_step=fps, candidates=args.candidates,
                       elites=args.elites, iterations=args.iterations)
    encoder = ActionEncoder("twist", 1.0 / CAMERA_HZ, fps)
    methods = ["cem", "shuffled_actions"] + (["zero_actions"] if args.zero_baseline else []) + ["random"]
    methods += [] if args.no_oracle else ["oracle"]
    episodes = []
    for e in range(args.episodes):
        seed = args.seed + e
        rng = np.random.default_rng([seed, 7])
        rover = Rover(seed, args.size)
        creep = (0.2, 0.0)  # the start: creeping forward, so the history shows the scene and some motion
        context_frames = [rover.frame(*creep) for _ in range(args.context_frames)]
        context_actions = list(encoder(np.array([[creep]]))[0][:1].repeat(args.context_frames, axis=0))
        start = rover.save()
        goal = make_goal(rover, rng, args.goal_frames)
        goal_err = pose_error(rover.pose(), goal.pose)
        row = {"seed": seed, "goal_command": list(goal.command), "goal_offset_m": goal_err[0],
               "goal_offset_deg": goal_err[1], "methods": {}}
        for m in methods:
            method_rng = np.random.default_rng([seed, 11, methods.index(m)])
            row["methods"][m] = run_method(m, rover, start, (context_frames, context_actions), goal, args, model,
                                           config, encoder, method_rng)
        rover.close()
        episodes.append(row)
        brief = "  ".join(f"{m}: {first_success(row['methods'][m]['per_step'], view_ok) or '-'}"
                          f"/{first_success(row['methods'][m]['per_step'], pose_ok) or '-'}" for m in methods)
        print(f"episode {e + 1}/{args.episodes} seed {seed} goal {goal.command[0]:.2f} m/s {goal.command[1]:+.2f} rad/s "
              f"(view/pose success step) {brief}", flush=True)
    result: dict[str, Any] = {"episodes": args.episodes, "methods": methods}
    result.update(summarise(episodes, methods, args.steps))
    result["criteria"] = {"view": f"d(view, goal) <= {VIEW_RATIO} * d(start view, goal), d = MSE of 16x16 RGB in [0,1]",
                          "pose": f"position within {POSE_POSITION_M} m and heading within {POSE_HEADING_DEG} deg of the goal",
                          "steps": "first step meeting the view criterion: mean_steps over successes, "
                                   "mean_steps_with_failures counting a failure as the budget"}
    result["settings"] = {"checkpoint": args.checkpoint, "seed": args.seed, "steps": args.steps,
                          "goal_frames": args.goal_frames, "context_frames": args.context_frames,
                          "denoise_steps": args.denoise_steps, "draft": args.draft, "guidance_scale": args.guidance,
                          "cem": asdict(config), "torch_threads": args.threads, "image_size": args.size,
                          "quick": args.quick, "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:]))}
    result["machine"] = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()}
    result["wall_s"] = time.perf_counter() - began
    result["per_episode"] = episodes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_plot:
        plot(result, args.out.with_suffix(".png"))
    print(f"{'method':<18}{'view success':>13}{'pose success':>13}{'mean steps':>11}{'final view ratio':>17}{'plan s/step':>12}")
    for m in methods:
        steps = result["mean_steps"][m]
        print(f"{m:<18}{result['success_rate'][m]:>13.2f}{result['pose_success_rate'][m]:>13.2f}"
              f"{'-' if steps is None else f'{steps:.2f}':>11}{result['mean_final_view_ratio'][m]:>17.2f}"
              f"{result['mean_plan_s_per_step'][m]:>12.2f}")
    print(f"wrote {args.out} ({result['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
