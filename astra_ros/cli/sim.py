"""``astra-sim``: record simulated episodes as ROS 2 bags.

Example::

    astra-sim record --scenario explore --episodes 4 --seed 0 --out data/sim

writes ``data/sim/explore_s0`` ... ``data/sim/explore_s3`` (episode i uses seed S + i).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from astra_ros.cli.arguments import check_output_dir
from astra_ros.cli.log_level import package_log_level
from astra_ros.data.actions import scenario_modality


# Largest image side recorded: MuJoCo's offscreen framebuffer is allocated at the image size.
MAX_IMAGE_SIDE = 4096


def _parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (width, height) [px]."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"size must look like WIDTHxHEIGHT, e.g. 128x128, got {text!r}") from error
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:  # beyond it the offscreen framebuffer may fail
        raise argparse.ArgumentTypeError(f"size must be at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}, got {text!r}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``astra-sim`` (subcommand ``record``)."""
    parser = argparse.ArgumentParser(prog="astra-sim", description="Simulate MuJoCo scenarios and record them as ROS 2 bags.")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    record = subcommands.add_parser(
        "record",
        help="record episodes as bags",
        description=(
            "Record N episodes of a scenario, one ROS 2 bag per episode named OUT/<scenario>_s<seed>. "
            "Scenarios: explore (free camera, camera modality), arm (robot arm, robot modality), "
            "rover (wheeled robot, twist modality)."
        ),
    )
    record.add_argument("--scenario", required=True, choices=sorted(scenario_modality), help="which scene to simulate")
    record.add_argument("--episodes", type=int, default=1, help="number of episodes (bags) to record (default 1)")
    record.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode i uses seed+i (default 0)")
    record.add_argument("--out", required=True, help="directory the bags are written into (created if missing)")
    record.add_argument("--seconds", type=float, default=10.0, help="length of each episode [s] (default 10)")
    record.add_argument("--size", type=_parse_size, default=(128, 128), help="image size WIDTHxHEIGHT [px] (default 128x128)")
    record.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage format (default mcap)")
    record.add_argument("--camera-rate", type=int, default=10, help="image rate [Hz] (default 10)")
    record.add_argument(
        "--state-rate", type=int, default=30, help="pose/command/odometry rate [Hz], a multiple of --camera-rate (default 30)"
    )
    record.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: the process arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "record":
        check_output_dir(parser, Path(args.out))
    return args


def _record(args: argparse.Namespace) -> int:
    # Imported here so `astra-sim --help` does not start MuJoCo.
    from astra_ros.data.record import episode_bag_path, record_episode
    from astra_ros.data.scenes import SimSettings

    if args.episodes < 1:
        print("--episodes must be at least 1", file=sys.stderr)
        return 2
    if args.seed < 0:  # numpy's generators take non-negative seeds only
        print(f"astra-sim record: --seed must be >= 0, got {args.seed}", file=sys.stderr)
        return 2
    try:
        settings = SimSettings(
            seconds=args.seconds,
            image_width=args.size[0],
            image_height=args.size[1],
            camera_rate_hz=args.camera_rate,
            state_rate_hz=args.state_rate,
        )
    except ValueError as error:  # said in this command's flags, not the settings' field names
        text = str(error)
        for field, flag in (("state_rate_hz", "--state-rate"), ("camera_rate_hz", "--camera-rate")):
            text = text.replace(field, flag)
        print(f"astra-sim record: {text}", file=sys.stderr)
        return 2
    seeds = range(args.seed, args.seed + args.episodes)
    for seed in tqdm(seeds, desc=f"{args.scenario} episodes", unit="bag", disable=args.quiet or args.episodes == 1):
        started = time.perf_counter()
        try:
            bag = record_episode(
                args.scenario, seed, args.out, settings=settings, storage=args.storage, progress=not args.quiet
            )
        except FileExistsError as error:
            print(f"astra-sim record: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            # record_episode has removed the unfinished bag; the ones before it are complete.
            print(f"astra-sim record: interrupted; {episode_bag_path(args.out, args.scenario, seed)} was not written",
                  file=sys.stderr)
            raise
        print(f"{bag} ({time.perf_counter() - started:.1f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``astra-sim`` console script; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.command is None:  # a usage error, as argparse's own
        build_parser().print_help(sys.stderr)
        return 2
    try:
        with package_log_level(logging.INFO):
            return _record(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
