"""The analytic FLOP counts (astra-bench's step_flops) against torch's own counter, part by part."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from astra_ros.model import WorldModel
from astra_ros.model import flops as F
from astra_ros.model.config import CodecConfig, preset
from astra_ros.model.step_profile import StepRecorder


def _counted(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def model():
    # Tiny, but with every part the default has: a 3-level codec with a mid-block, an anchor decoder.
    # Its step runs the default's path: delta references turned by the actions, anchor decoding.
    codec = CodecConfig(latent_channels=4, block_out_channels=(8, 8, 16), layers_per_block=1, norm_num_groups=4)
    cfg = preset("tiny", resolution=(32, 32), anchor_decoder_width=8, codec=codec, rotation_reference=True,
                 latent_delta=True, residual_decoding=True)
    torch.manual_seed(0)
    return WorldModel(cfg)


def test_codec_and_anchor_decoder_match_the_counter(model):
    cfg = model.config
    h, w = cfg.resolution
    x = torch.rand(1, 2, 3, h, w) * 2 - 1
    z = model.codec.encode(x)
    encode, decode = F.codec_encode(cfg.codec, h, w), F.codec_decode(cfg.codec, h, w)
    # The counter sees no CPU flash attention: it equals the dense part exactly.
    assert _counted(lambda: model.codec.encode(x)) == 2 * encode.dense
    assert _counted(lambda: model.codec.decode(z)) == 2 * decode.dense
    cells = (h // 4) * (w // 4)  # the mid-block's single-head attention over the lowest level (16 wide)
    assert encode.attention == decode.attention == 4 * cells * cells * 16
    frames, latents = x[0], z[0].transpose(0, 1)
    assert _counted(lambda: model.anchor_decoder(frames, latents, frames, latents, frames)) == \
        2 * F.anchor_decoder(cfg, h, w).dense


@pytest.mark.parametrize("batch, past_chunks", [(1, 0), (2, 3)])
def test_transformer_pass_matches_the_counter_plus_attention(model, batch, past_chunks):
    cfg = model.config
    tokens = cfg.tokens_per_frame * cfg.chunk_frames
    latents = torch.randn(batch, cfg.codec.latent_channels, cfg.chunk_frames, *cfg.latent_size)
    t = torch.full((batch, cfg.chunk_frames), 0.5)
    past = [(torch.randn(1, cfg.num_attention_heads, past_chunks * tokens, cfg.attention_head_dim),) * 2
            for _ in range(cfg.num_layers)] if past_chunks else None
    feats = torch.zeros(batch, cfg.chunk_frames, cfg.action_dim)
    counted = _counted(lambda: model.transformer(latents, t, torch.arange(cfg.chunk_frames), feats, past_kv=past))
    flops = F.transformer_pass(cfg, tokens, past_chunks * tokens, batch)
    assert counted == flops.dense
    assert flops.attention == batch * cfg.num_layers * 4 * tokens * (past_chunks + 1) * tokens * cfg.inner_dim


def test_step_recorder_counts_what_a_step_runs(model):
    cfg = model.config
    n = model.frames_per_chunk
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (3 * n, *cfg.resolution, 3), dtype=np.uint8)
    actions = (rng.normal(size=(3 * n, 6)) * 0.05).astype(np.float32)
    model.start(video, actions, modality="twist", seed=0)
    recorder = StepRecorder(model)
    with recorder.recording():
        model.step(actions[:n], seed=0)
    assert recorder.decoded >= n and recorder.anchored == n
    # The last observed chunk's pass (deferred by start(), alone: guidance doubles the prediction's
    # batch), then 3 guided denoising passes; the step's own chunk waits for the next prediction.
    tokens = n * cfg.tokens_per_frame
    assert recorder.passes == [(1, tokens, 2 * tokens)] + [(2, tokens, 3 * tokens)] * cfg.denoise_steps
    assert set(recorder.seconds) == {"codec_encode", "codec_decode", "transformer", "anchor_decoder"}
    # The recorded calls' analytic FLOPs, less attention, are what the counter sees of the same step
    # but for the action encoder and the view rotations, which are small.
    model.start(video, actions, modality="twist", seed=0)
    counted = _counted(lambda: model.step(actions[:n], seed=0))
    dense = sum(f.dense for f in recorder.flops().values())
    assert dense <= counted <= 1.05 * dense
    # Leaving the recorder restores the parts: nothing more is recorded.
    model.start(video, actions, modality="twist", seed=0)
    model.step(actions[:n], seed=0)
    assert recorder.anchored == n


def test_fused_pass_attention_counts_each_group_over_its_own_keys(model):
    cfg = model.config
    tokens = cfg.tokens_per_frame * cfg.chunk_frames
    latents = torch.randn(1, cfg.codec.latent_channels, 2 * cfg.chunk_frames, *cfg.latent_size)
    t = torch.full((1, 2 * cfg.chunk_frames), 0.5)
    past = [(torch.randn(1, cfg.num_attention_heads, 3 * tokens, cfg.attention_head_dim),) * 2
            for _ in range(cfg.num_layers)]
    feats = torch.zeros(1, 2 * cfg.chunk_frames, cfg.action_dim)
    counted = _counted(lambda: model.transformer(latents, t, torch.arange(2 * cfg.chunk_frames), feats, past_kv=past,
                                                 split=(cfg.chunk_frames, tokens)))
    flops = F.transformer_pass(cfg, 2 * tokens, 3 * tokens, split=(tokens, tokens))
    assert counted == flops.dense
    # History queries over 3 past + 1 chunk, target queries over 2 past (one dropped) + 2 chunks.
    assert flops.attention == cfg.num_layers * 4 * cfg.inner_dim * (tokens * 4 * tokens + tokens * 4 * tokens)
