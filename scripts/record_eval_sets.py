#!/usr/bin/env python3
"""Record the evaluation sets of config/test_sets.yaml with ``astra-sim record``.

    .venv/bin/python scripts/record_eval_sets.py --set test --out /work/data/eval/test
    .venv/bin/python scripts/record_eval_sets.py --set heldout_9000 --out /work/data/eval/heldout_9000
    .venv/bin/python scripts/record_eval_sets.py --set test --out DIR --dry-run   # print the commands only

Bags already in OUT (a complete ``<scenario>_s<seed>`` directory) are kept, so an interrupted run
continues where it stopped. Set MUJOCO_GL=egl on a headless machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from astra_ros.cli.sim import main as sim_main
from astra_ros.data.record import episode_bag_path

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "test_sets.yaml"


def recording_commands(config: dict, name: str, out: Path) -> list[list[str]]:
    """``astra-sim`` argument lists recording set ``name`` (``test`` or a choosing set) into ``out``."""
    rec = config["recording"]
    common = ["--seconds", str(rec["seconds"]), "--size", str(rec["size"]), "--camera-rate",
              str(rec["camera_rate_hz"]), "--state-rate", str(rec["state_rate_hz"]), "--quiet"]
    if name == "test":
        runs = [(scenario, spec["first_seed"], spec["episodes"]) for scenario, spec in config["test"].items()]
    elif name in config["choosing"]:
        spec = config["choosing"][name]
        runs = [(scenario, spec["first_seed"], spec["episodes"]) for scenario in spec["scenarios"]]
    else:
        raise SystemExit(f"unknown set {name!r}; known: test, {', '.join(config['choosing'])}")
    commands = []
    for scenario, first, episodes in runs:
        for seed in range(first, first + episodes):
            if (episode_bag_path(out, scenario, seed) / "metadata.yaml").exists():
                continue  # recorded before
            commands.append(["record", "--scenario", scenario, "--episodes", "1", "--seed", str(seed),
                             "--out", str(out), *common])
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="test", help="'test' or the name of a choosing set")
    parser.add_argument("--out", required=True, type=Path, help="directory the bags are written into")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the sets file")
    parser.add_argument("--dry-run", action="store_true", help="print the astra-sim commands, record nothing")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    commands = recording_commands(config, args.set, args.out)
    print(f"{len(commands)} bag(s) to record into {args.out}")
    for command in commands:
        if args.dry_run:
            print("astra-sim " + " ".join(command))
            continue
        status = sim_main(command)
        if status != 0:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
