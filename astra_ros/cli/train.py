"""``astra-train``: train an Astra world model on ROS 2 bags.

    astra-train --config config/default/01-base.yaml --data bags/ --out runs/default
    astra-train --config config/finetune.yaml --init default --data my_bags/ --profile my_robot.yaml \
        --data sim_bags/ --profile config/robots/rover.yaml --out runs/mine    # bags of two robots
    torchrun --nproc_per_node 2 -m astra_ros.cli.train --config ... --data ... --out ...   # DDP
    astra-train --config RECIPE_WITH_PRESET_wan2.1-1.3b --init-wan Wan2.1-T2V-1.3B-Diffusers/ --data ... --out ...
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path

from astra_ros.cli.arguments import check_output_dir, non_negative_int

log = logging.getLogger("astra_train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="astra-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="training recipe (YAML)")
    p.add_argument("--data", type=Path, nargs="+", action="append",
                   help="ROS 2 bags: bag directories, .mcap/.db3 files, or folders holding them; repeat it to "
                        "give bags of several robots, each followed by its --profile")
    p.add_argument("--profile", type=Path, action="append", default=[],
                   help="robot profile (YAML, config/robots/) the --data before it is read through: one for "
                        "all --data, or one per --data in order (none: this project's topic names)")
    p.add_argument("--data-list", type=Path,
                   help="instead of --data/--profile: a YAML list of {data: PATHS, profile: FILE} entries")
    p.add_argument("--out", type=Path, required=True, help="output directory (checkpoint, loss.csv, loss.png)")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/train_state")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (e.g. a trained codec); the recipe's model "
                        "fields override its config")
    p.add_argument("--init-codec", default=None,
                   help="take only the codec (and its anchor decoder, where the recipe has one of the same width) from "
                        "this checkpoint (same codec config and resolution); the transformer starts fresh from the "
                        "recipe, e.g. for ablations at equal budget")
    p.add_argument("--init-transformer", default=None,
                   help="start the transformer from this checkpoint's wherever names and shapes match (the rest "
                        "fresh), e.g. with --init-codec when the codec or the patch size changes")
    p.add_argument("--init-wan", default=None, metavar="DIR",
                   help="start from Wan2.1 weights in diffusers format: a WanTransformer3DModel folder, or a pipeline "
                        "folder with transformer/ (and vae/, which then becomes the codec). The recipe's model must "
                        "match them (preset wan2.1-1.3b); the text cross-attention is folded for an all-zero context "
                        "(docs/SCALE.md) and Astra's action layers start at their initialisation")
    p.add_argument("--stop-after", type=non_negative_int, default=None,
                   help="stop after this many total steps (resume later; 0 writes the starting weights)")
    p.add_argument("--device", default="auto",
                   help="auto (a GPU where CUDA is available, else the CPU), cpu, cuda (under torchrun: "
                        "cuda:LOCAL_RANK, one GPU per process) or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if (args.data is None) == (args.data_list is None):
        p.error("give the bags with --data (and --profile) or with --data-list, one of the two")
    if args.data_list is not None and args.profile:
        p.error("--profile goes with --data; a --data-list names each entry's profile")
    check_output_dir(p, args.out)
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.init and (args.init_codec or args.init_transformer):
        log.error("astra-train: --init takes the whole checkpoint; give it or --init-codec / --init-transformer")
        return 2
    if args.init_wan and (args.init or args.init_transformer):
        log.error("astra-train: --init-wan gives the transformer; it cannot be combined with --init or --init-transformer")
        return 2
    import torch.distributed as dist

    try:
        code = _train(args)
    except BaseException:
        if not dist.is_initialized():
            raise
        traceback.print_exc()  # printed here: the exit below skips the interpreter's own report
        code = 1
    if dist.is_initialized():
        _leave_process_group_and_exit(code)
    return code


def _train(args: argparse.Namespace) -> int:
    from astra_ros.data.bags import BagError
    from astra_ros.model import CheckpointError, ConfigError
    from astra_ros.training.data import load_data_list, pair_sources
    from astra_ros.training.recipe import TrainRecipe
    from astra_ros.training.state import read_state_meta
    from astra_ros.training.trainer import Trainer

    try:
        recipe = TrainRecipe.from_yaml(args.config)
        data = load_data_list(args.data_list) if args.data_list else pair_sources(args.data, args.profile)
        with tempfile.TemporaryDirectory(prefix="astra_init_wan_") as wan_checkpoint:
            init_codec, init_transformer = args.init_codec, args.init_transformer
            if args.init_wan and not args.resume:
                init_codec, init_transformer = _wan_checkpoint(args, recipe.model_config(), Path(wan_checkpoint))
            trainer = Trainer(recipe, data, args.out, resume=args.resume, init_checkpoint=args.init,
                              init_codec=init_codec, init_transformer=init_transformer,
                              stop_after=args.stop_after, progress=not args.no_progress, device=args.device)
        trainer.run()
    except (BagError, CheckpointError, ConfigError, FileNotFoundError) as err:
        log.error("astra-train: %s", err)
        return 2
    except KeyboardInterrupt:  # before the first step (decoding bags), or a second Ctrl-C during one
        try:  # the current state, or the .old one a Ctrl-C during the swap left
            read_state_meta(args.out / "train_state")
            log.error("astra-train: interrupted; the last checkpoint in %s is intact: continue with --resume", args.out)
        except CheckpointError:
            log.error("astra-train: interrupted; no step was saved")
        return 130
    except FloatingPointError as err:  # a diverged step: nothing of it was saved
        if (args.out / "model.safetensors").is_file():
            log.error("astra-train: %s; the last checkpoint in %s is intact: go on from it with a lower lr "
                      "in a new run (--init %s --out NEW)", err, args.out, args.out)
        else:
            log.error("astra-train: %s; no checkpoint was written before it: start again with a lower lr", err)
        return 2
    return 0


def _wan_checkpoint(args: argparse.Namespace, config, folder: Path) -> tuple[str | None, str]:
    """Import ``--init-wan`` into an Astra checkpoint in ``folder`` for the trainer's --init-transformer
    (and --init-codec where the Wan folder has a VAE); returns (init_codec, init_transformer)."""
    from astra_ros.model import CheckpointError, ConfigError
    from astra_ros.model.wan_import import load_wan_diffusers

    try:
        model, report = load_wan_diffusers(args.init_wan, config)
    except ConfigError:  # a recipe that does not match the weights: reported as it is
        raise
    except ValueError as err:  # weights that cannot be imported
        raise CheckpointError(f"--init-wan {args.init_wan}: {err}") from err
    log.info("%s", report.summary())
    if report.vae_loaded and args.init_codec:
        raise CheckpointError(f"--init-wan {args.init_wan} has a VAE, which becomes the codec: drop --init-codec")
    model.save_pretrained(folder)
    return (str(folder) if report.vae_loaded else args.init_codec), str(folder)


def _leave_process_group_and_exit(code: int) -> None:
    """End a torchrun worker without the interpreter's finalisation.

    A gloo worker thread frees each finished collective's tensors after the caller has seen it
    complete, and it needs the GIL to do so. A rank that exits right after its last collective
    can reach interpreter finalisation first; that thread then dies holding a C++ destructor and
    the process aborts ('terminate called without an active exception', about 1 run in 20 of the
    two-process test; traced with gdb to ProcessGroupGloo::runLoop). Everything the run writes is
    closed by now, so flush what is buffered and exit directly.
    """
    import torch.distributed as dist

    try:
        dist.destroy_process_group()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
