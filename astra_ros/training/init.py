"""Where an astra-train model starts: a whole checkpoint (its config overridden by the recipe, deeper
if the recipe asks), or a fresh model given a trained codec or the transformer tensors that still fit."""

from __future__ import annotations

import dataclasses
import logging

from astra_ros.model import CheckpointError, WorldModel
from astra_ros.model.config import ConfigError

log = logging.getLogger("astra_train")


def init_from(checkpoint: str, overrides: dict) -> WorldModel:
    """The checkpoint's model, with the recipe's ``model`` fields applied to its config: how it
    trains and samples may change (e.g. ``latent_delta``); a changed shape fails on the weights,
    except more ``num_layers``: the checkpoint's blocks are kept and the new ones appended as
    identities, so the deeper model starts as the checkpoint's exact function."""
    if "codec" in overrides:
        raise ConfigError("with --init the codec comes from the checkpoint; drop 'codec' from the recipe's model")
    overrides = dict(overrides)
    layers = overrides.pop("num_layers", None)
    try:
        model = WorldModel.from_pretrained(checkpoint, config_overrides=overrides)
    except CheckpointError as err:
        if not overrides or "does not match" not in str(err):
            raise
        raise CheckpointError(f"--init {checkpoint} with the recipe's model overrides {overrides}: {err}; an "
                              "override that changes weight shapes cannot apply to a trained checkpoint") from err
    if layers is None or layers == model.config.num_layers:
        return model
    kept = model.config.num_layers
    if not isinstance(layers, int) or layers < kept:
        raise ConfigError(f"--init {checkpoint}: num_layers {layers!r} in the recipe; the checkpoint has {kept} "
                          "blocks, and a model can only grow (new blocks start as identities)")
    grown = WorldModel(dataclasses.replace(model.config, num_layers=layers))
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    new_blocks = tuple(f"transformer.blocks.{i}." for i in range(kept, layers))
    if unexpected or not all(k.startswith(new_blocks) for k in missing):
        raise CheckpointError(f"--init {checkpoint}: growing to {layers} blocks left tensors unmatched "
                              f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    grown.transformer.make_blocks_identity(kept)
    log.info("grew the transformer from %d to %d blocks (blocks %d-%d start as identities)",
             kept, layers, kept, layers - 1)
    return grown.eval()


def load_codec(model: WorldModel, checkpoint: str) -> None:
    """Copy a trained codec (weights and latent statistics) into the freshly built model, and its anchor
    decoder where both have one of the same shape: the pixel side of the model, which a transformer
    trained from scratch (an ablation of the final design) reads as the default does."""
    source = WorldModel.from_pretrained(checkpoint)
    if source.config.codec != model.config.codec or source.config.resolution != model.config.resolution:
        raise CheckpointError(f"--init-codec {checkpoint}: its codec {source.config.codec} at "
                              f"{source.config.resolution} differs from the recipe's {model.config.codec} "
                              f"at {model.config.resolution}")
    model.codec.load_state_dict(source.codec.state_dict())
    if model.anchor_decoder is None:
        return
    same = (source.anchor_decoder is not None
            and source.config.anchor_decoder_width == model.config.anchor_decoder_width
            and source.config.anchor_decoder_search == model.config.anchor_decoder_search)
    if same:
        model.anchor_decoder.load_state_dict(source.anchor_decoder.state_dict())
        log.info("anchor decoder from %s", checkpoint)
    else:
        log.info("--init-codec %s has no anchor decoder of the recipe's width %d: it starts untrained "
                 "(residual decoding)", checkpoint, model.config.anchor_decoder_width)


def load_transformer(model: WorldModel, checkpoint: str) -> None:
    """Start the freshly built transformer from a checkpoint's, wherever the tensors have the same
    name and shape (e.g. every block, MoAE and its action statistics when only the patch size or
    the codec changed); the rest keeps its fresh initialisation and is listed in the log."""
    source = WorldModel.from_pretrained(checkpoint).transformer.state_dict()
    own = model.transformer.state_dict()
    taken = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not taken:
        raise CheckpointError(f"--init-transformer {checkpoint}: no tensor matches the recipe's transformer "
                              "in name and shape")
    model.transformer.load_state_dict(taken, strict=False)
    fresh = sorted(set(own) - set(taken))
    log.info("transformer from %s: %d of %d tensors taken; fresh: %s", checkpoint, len(taken), len(own),
             ", ".join(fresh) if fresh else "none")
