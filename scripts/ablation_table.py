#!/usr/bin/env python3
"""The ablation table: several models scored by ``astra-eval --save-frames`` on the same clips, each
against copy-last and, paired over the clips, against the first (the reference).

    .venv/bin/python scripts/ablation_table.py base=runs/eval/base "no history noise=runs/eval/nohn" ... \
        [--out ablations.json]

Each ``NAME=DIR`` is an astra-eval output directory (its ``metrics.json`` and ``frames/``). Per model:
the pooled-MSE gain over copy-last overall and in every scenario, the changed-pixel gain, the action
sensitivity with its 95 % interval (all from ``metrics.json``), and the paired difference to the
reference overall and in every scenario (``scripts/compare_frames.py``'s bootstrap over clips).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_frames import compare, paired_errors  # noqa: E402  (a script beside this one)


def _model(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.rpartition("=")  # a name may hold "=" (s = 3), a path seldom does
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=EVAL_DIR, got {spec!r}")
    directory = Path(path)
    if not (directory / "metrics.json").is_file() or not (directory / "frames").is_dir():
        raise argparse.ArgumentTypeError(f"{directory} holds no metrics.json and frames/ (run astra-eval with "
                                         "--out DIR --save-frames DIR/frames)")
    return name, directory


def summary(directory: Path) -> dict:
    """Gains and sensitivities of one evaluation, overall and per scenario."""
    metrics = json.loads((directory / "metrics.json").read_text())
    groups = {"all": metrics["dynamics"]["overall"], **metrics["dynamics"]["per_scenario"]}
    return {name: {"gain": g["pooled_psnr"]["gain"], "gain_ci95": g["pooled_psnr"]["gain_ci95"],
                   "changed_gain": g["changed_psnr"]["gain"], "sensitivity": g["action_sensitivity"],
                   "sensitivity_ci95": g["action_sensitivity_ci95"], "clips": g["clips"]}
            for name, g in groups.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=_model, help="NAME=EVAL_DIR, the reference first")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = parser.parse_args(argv)
    (ref_name, ref_dir), result = args.models[0], {}
    for name, directory in args.models:
        result[name] = {"scores": summary(directory)}
        if directory != ref_dir:
            result[name]["vs_reference"] = compare(paired_errors(directory / "frames", ref_dir / "frames"))
    scenarios = [s for s in result[ref_name]["scores"] if s != "all"]
    print(f"| model | gain over copy-last [dB] (95 %) | " + " | ".join(f"`{s}`" for s in scenarios)
          + " | changed-pixel gain | `arm` changed | sensitivity (95 %) | `arm` sensitivity | "
          f"vs {ref_name}, paired (95 %) | `arm` vs {ref_name} |")
    print("|---" + "|---:" * (len(scenarios) + 7) + "|")
    for name, r in result.items():
        s, paired = r["scores"], r.get("vs_reference")
        lo, hi = s["all"]["gain_ci95"]
        slo, shi = s["all"]["sensitivity_ci95"]
        arm = s.get("arm", {})
        vs = (f"{paired['all']['a_minus_b']:+.2f} ({paired['all']['a_minus_b_ci95'][0]:+.2f} to "
              f"{paired['all']['a_minus_b_ci95'][1]:+.2f})") if paired else "reference"
        vs_arm = f"{paired['arm']['a_minus_b']:+.2f}" if paired and "arm" in paired else ""
        print(f"| {name} | {s['all']['gain']:+.2f} ({lo:+.2f} to {hi:+.2f}) | "
              + " | ".join(f"{s[sc]['gain']:+.2f}" for sc in scenarios)
              + f" | {s['all']['changed_gain']:+.2f} | {arm.get('changed_gain', float('nan')):+.2f} | "
              f"{s['all']['sensitivity']:.2f} ({slo:.2f}-{shi:.2f}) | {arm.get('sensitivity', float('nan')):.2f} | "
              f"{vs} | {vs_arm} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
