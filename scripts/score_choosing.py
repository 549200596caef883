#!/usr/bin/env python3
"""Score a candidate checkpoint on the choosing sets, and pair it with a baseline scored the same way.

    .venv/bin/python scripts/score_choosing.py CHECKPOINT --eval-dir /work/data/eval --out scores/cand \\
        [--scorings 1s,4s,turning4s] [--baseline scores/release16] [--json docs/x.json --key cand]

The scorings (which bags of which choosing set, with which flags) are ``choosing_scorings`` in
config/test_sets.yaml; each choosing set must have been recorded into ``EVAL_DIR/<set>`` by
scripts/record_eval_sets.py. Each scoring runs ``astra-eval --save-frames`` into ``OUT/<scoring>``; one
already there (its metrics.json written) is kept, so an interrupted scoring continues. With
``--baseline`` (another OUT of this script, e.g. the released default's) every scoring is paired clip by
clip with the baseline's (scripts/compare_frames.py: A - B with a paired bootstrap 95 % interval).
The summary goes to ``OUT/summary.json`` and, with ``--json``/``--key``, into that file under the key.

Never point it at the test sets: they are scored once per released model (see config/test_sets.yaml).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from astra_ros.cli.eval import main as eval_main
from astra_ros.data.record import episode_bag_path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "test_sets.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_frames import compare, paired_errors  # noqa: E402  (a sibling script, not a package module)


def scoring_bags(config: dict, scoring: str, eval_dir: Path) -> list[Path]:
    """The bag directories of ``scoring``; every missing one named in a single error."""
    scorings = config["choosing_scorings"]
    if scoring not in scorings:
        raise SystemExit(f"unknown scoring {scoring!r}; known: {', '.join(scorings)}")
    bags = []
    for part in scorings[scoring]["bags"]:
        spec = config["choosing"][part["set"]]
        part_bags = []
        for scenario in part.get("scenarios", spec["scenarios"]):
            if scenario not in spec["scenarios"]:
                raise SystemExit(f"choosing set {part['set']} has no scenario {scenario!r}")
            for seed in range(spec["first_seed"], spec["first_seed"] + spec["episodes"]):
                part_bags.append(episode_bag_path(eval_dir / part["set"], scenario, seed))
        # Sorted as astra-eval sorts a folder's bags, so clip files pair with scores made from the folders.
        bags += sorted(part_bags)
    missing = [b for b in bags if not (b / "metadata.yaml").exists()]
    if missing:
        sets = sorted({b.parent.name for b in missing})
        raise SystemExit(f"{len(missing)} bag(s) of scoring {scoring} not recorded: "
                         + ", ".join(str(b) for b in missing) + "\nrecord them with: "
                         + "; ".join(f"scripts/record_eval_sets.py --set {s} --out {eval_dir / s}" for s in sets))
    return bags


def eval_arguments(config: dict, scoring: str, checkpoint: str, out: Path, bags: list[Path],
                   threads: int | None) -> list[str]:
    """``astra-eval``'s argument list for one scoring."""
    flags = config["scoring"][config["choosing_scorings"][scoring]["flags"]]
    args = ["--checkpoint", checkpoint, "--out", str(out), "--save-frames", str(out / "frames"),
            *[str(f) for f in flags], "--quiet"]
    if threads:
        args += ["--threads", str(threads)]
    return args + [str(b) for b in bags]


def summarize(metrics: dict) -> dict:
    """Gains over copy-last (pooled and changed pixels) and sensitivity, overall and per scenario."""
    dynamics = metrics["dynamics"]
    groups = [("all", dynamics["overall"])] + sorted(dynamics.get("per_scenario", {}).items())
    out = {}
    for group, values in groups:
        row = {"clips": values["clips"], "pooled_gain_db": round(values["pooled_psnr"]["gain"], 3),
               "pooled_gain_ci95": [round(x, 3) for x in values["pooled_psnr"]["gain_ci95"]],
               "changed_gain_db": round(values["changed_psnr"]["gain"], 3),
               "sensitivity": values["action_sensitivity"]}
        if len(values.get("per_second", [])) > 1:
            row["per_second_gain_db"] = [round(s["pooled_psnr"]["gain"], 3) for s in values["per_second"]]
        out[group] = row
    return out


def paired_summary(a_frames: Path, b_frames: Path) -> dict:
    """A - B per group from the two ``--save-frames`` directories (the same clips)."""
    return {group: {"a_minus_b_db": round(r["a_minus_b"], 3), "ci95": [round(x, 3) for x in r["a_minus_b_ci95"]],
                    "changed_a_minus_b_db": round(r["changed_a_minus_b"], 3),
                    "a_better_share": round(r["a_better_share"], 3)}
            for group, r in compare(paired_errors(a_frames, b_frames)).items()}


def _print_table(name: str, summary: dict, paired: dict | None) -> None:
    print(f"{name}:")
    for group, row in summary.items():
        line = (f"  {group:8s} {row['clips']:3d} clips  gain {row['pooled_gain_db']:+.2f} dB "
                f"({row['pooled_gain_ci95'][0]:+.2f} to {row['pooled_gain_ci95'][1]:+.2f})  "
                f"changed {row['changed_gain_db']:+.2f}  sensitivity {row['sensitivity']:.2f}")
        if "per_second_gain_db" in row:
            line += "  per second " + " / ".join(f"{g:+.2f}" for g in row["per_second_gain_db"])
        if paired and group in paired:
            p = paired[group]
            line += f"  | vs baseline {p['a_minus_b_db']:+.2f} ({p['ci95'][0]:+.2f} to {p['ci95'][1]:+.2f})"
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint directory, or 'default'")
    parser.add_argument("--eval-dir", type=Path, required=True,
                        help="where the choosing sets were recorded (EVAL_DIR/<set>/<scenario>_s<seed>)")
    parser.add_argument("--out", type=Path, required=True, help="scores go to OUT/<scoring>")
    parser.add_argument("--scorings", default="1s,4s,turning4s", help="comma-separated choosing_scorings")
    parser.add_argument("--baseline", type=Path, help="another OUT of this script to pair against")
    parser.add_argument("--threads", type=int, help="torch CPU threads for astra-eval")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the sets file")
    parser.add_argument("--json", type=Path, help="also store the summary in this JSON file ...")
    parser.add_argument("--key", help="... under this key")
    args = parser.parse_args(argv)
    if (args.json is None) != (args.key is None):
        parser.error("--json and --key go together")
    config = yaml.safe_load(args.config.read_text())
    scorings = [s for s in args.scorings.split(",") if s]
    # Check every scoring's bags before the first (long) evaluation starts.
    bags = {s: scoring_bags(config, s, args.eval_dir) for s in scorings}
    if args.baseline:
        absent = [s for s in scorings if not (args.baseline / s / "frames").is_dir()]
        if absent:
            raise SystemExit(f"baseline {args.baseline} has no frames for: {', '.join(absent)}")
    result = {"checkpoint": args.checkpoint, "baseline": str(args.baseline) if args.baseline else None,
              "scorings": {}}
    for scoring in scorings:
        out = args.out / scoring
        if not (out / "metrics.json").exists():
            print(f"scoring {scoring}: {len(bags[scoring])} bags -> {out}", flush=True)
            code = eval_main(eval_arguments(config, scoring, args.checkpoint, out, bags[scoring], args.threads))
            if code:
                return code
        entry = {"summary": summarize(json.loads((out / "metrics.json").read_text()))}
        if args.baseline:
            entry["paired_vs_baseline"] = paired_summary(out / "frames", args.baseline / scoring / "frames")
        result["scorings"][scoring] = entry
        _print_table(scoring, entry["summary"], entry.get("paired_vs_baseline"))
    (args.out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        stored = json.loads(args.json.read_text()) if args.json.exists() else {}
        stored[args.key] = result
        args.json.write_text(json.dumps(stored, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
