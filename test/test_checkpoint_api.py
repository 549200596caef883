"""WorldModel API: save/load, corrupt checkpoints, bad inputs, imagine, streaming bookkeeping."""

import json
import re

import numpy as np
import pytest
import torch

from astra_ros.model import CheckpointError, WorldModel, load_world_model, preset
from astra_ros.model.config import ConfigError
from astra_ros.model.world_model import STILL_CELL_MSE


@pytest.fixture()
def model():
    torch.manual_seed(0)
    wm = WorldModel(preset("tiny"))
    with torch.no_grad():  # real action weights so actions change the output
        for block in wm.transformer.blocks:
            block.action_proj.weight.normal_(0, 0.5)
    return wm


def _frames(t, h=20, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (t, h, w, 3), dtype=np.uint8)


def test_saved_checkpoints_are_readable_by_others_as_the_umask_allows(model, tmp_path):
    # safetensors creates its file mode 0600: another user or a container could not load it.
    import os

    old = os.umask(0o022)
    try:
        path = model.save_pretrained(tmp_path / "ckpt")
    finally:
        os.umask(old)
    for name in ("config.json", "model.safetensors"):
        assert (path / name).stat().st_mode & 0o777 == 0o644, name


def test_save_then_load_gives_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = WorldModel.from_pretrained(tmp_path / "ckpt")
    acts = np.random.default_rng(1).normal(size=(6, 12)).astype(np.float32)
    outs = []
    for wm in (model, loaded):
        wm.start(_frames(4), acts[:4], modality="camera", seed=2)
        outs.append(wm.step(acts[4:6], seed=3))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_action_statistics_are_saved_and_older_checkpoints_without_them_still_load(model, tmp_path):
    from safetensors.torch import load_file, save_file

    rng = np.random.default_rng(4)
    acts = rng.normal(0.0, 0.05, size=(6, 12)).astype(np.float32)
    with torch.no_grad():
        model.transformer.action_encoder.set_action_statistics({"camera": rng.normal(0.0, 0.05, (50, 12))})
    path = model.save_pretrained(tmp_path / "ckpt")
    loaded = WorldModel.from_pretrained(path)
    for name in ("action_mean", "action_std"):
        assert torch.equal(getattr(loaded.transformer.action_encoder, name), getattr(model.transformer.action_encoder, name))
    # A checkpoint from before the statistics existed: identity statistics, the same outputs as before.
    plain = WorldModel(preset("tiny"))
    old = plain.save_pretrained(tmp_path / "old")
    state = load_file(str(old / "model.safetensors"))
    for key in [k for k in state if k.endswith(("action_mean", "action_std"))]:
        del state[key]
    save_file(state, str(old / "model.safetensors"))
    reloaded = WorldModel.from_pretrained(old)
    assert reloaded.transformer.action_encoder.action_std.eq(1).all()
    outs = []
    for wm in (plain, reloaded):
        wm.start(_frames(4), acts[:4], modality="camera", seed=2)
        outs.append(wm.step(acts[4:6], seed=3))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_truncated_weights_raise_a_clear_error(model, tmp_path):
    path = model.save_pretrained(tmp_path / "ckpt")
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        WorldModel.from_pretrained(path)


def test_weights_that_do_not_match_the_config_raise(model, tmp_path):
    path = model.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((path / "config.json").read_text())
    cfg["ffn_dim"] = 40
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        WorldModel.from_pretrained(path)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["modalities"].update(jetpack=3), "unknown action modalities"),
    (lambda c: c.update(secret_sauce=1), "unknown config keys"),
    (lambda c: c.update(num_layers="two"), "must be an integer"),
    (lambda c: c["codec"].update(kind="pickle"), "codec.kind"),
    # shapes that used to load and then crash inside the first forward pass
    (lambda c: c.update(patch_size=[1, 2, 3]), r"multiples of codec factor x patch = \(4, 6\)"),
    (lambda c: c.update(patch_size=[1, 0, 2]), "patch_size entries must be >= 1"),
    (lambda c: c.update(patch_size=[1, -2, -2]), "patch_size entries must be >= 1"),
    (lambda c: c["codec"].update(norm_num_groups=0), "norm_num_groups must be >= 1"),
    (lambda c: c["codec"].update(block_out_channels=[]), "at least one level"),
    (lambda c: c["codec"].update(latent_channels=0), "latent_channels must be >= 1"),
])
def test_invalid_config_json_is_rejected(model, tmp_path, edit, message):
    path = model.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message):
        WorldModel.from_pretrained(path)



def test_a_config_json_missing_a_field_is_refused_unless_the_field_came_later(model, tmp_path):
    """A hand-edited config.json without `history_noise` would run at the default noise level the
    weights were never tuned for; fields added after release load with their old-behaviour default."""
    path = model.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k not in ("history_noise", "resolution")}))
    with pytest.raises(CheckpointError, match=r"\['history_noise', 'resolution'\] are missing"):
        WorldModel.from_pretrained(path)
    older = {k: v for k, v in cfg.items() if k not in ("residual_decoding", "latent_delta", "prediction")}
    (path / "config.json").write_text(json.dumps(older))
    loaded = WorldModel.from_pretrained(path)
    assert (loaded.config.residual_decoding, loaded.config.latent_delta, loaded.config.prediction) == (False, False, "velocity")


def test_integer_weights_for_float_parameters_are_refused(model, tmp_path):
    """load_state_dict would cast them silently; a half-precision file is cast on purpose and loads."""
    from safetensors.torch import load_file, save_file

    path = model.save_pretrained(tmp_path / "ckpt")
    state = load_file(str(path / "model.safetensors"))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 2)
    save_file({**state, name: state[name].round().to(torch.int64)}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"1 dtype mismatches \\(e.g. {re.escape(name)}: file torch.int64"):
        WorldModel.from_pretrained(path)
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}, str(path / "model.safetensors"))
    half = WorldModel.from_pretrained(path)
    expected = state[name].to(torch.bfloat16).float()
    assert torch.equal(half.state_dict()[name], expected)


def test_a_partly_float16_checkpoint_loads_upcast_to_float32_and_an_overflow_is_refused(model, tmp_path):
    """How releases are stored (docs/CHECKPOINTS.md): the transformer blocks in float16, the rest float32."""
    from safetensors.torch import load_file, save_file

    path = model.save_pretrained(tmp_path / "ckpt")
    state = load_file(str(path / "model.safetensors"))
    mixed = {k: v.half() if k.startswith("transformer.blocks.") and v.is_floating_point() else v for k, v in state.items()}
    assert any(v.dtype == torch.float16 for v in mixed.values()) and any(v.dtype == torch.float32 for v in mixed.values())
    save_file(mixed, str(path / "model.safetensors"))
    loaded = WorldModel.from_pretrained(path)
    loaded_state = loaded.state_dict()
    assert all(v.dtype == torch.float32 for v in loaded_state.values() if v.is_floating_point())
    for name, value in mixed.items():
        assert torch.equal(loaded_state[name], value.float()), name
    name = next(k for k in mixed if k.startswith("transformer.blocks.") and k.endswith("action_proj.weight"))
    changed = (loaded_state[name] - state[name]).abs().max()
    assert 0 < changed <= state[name].abs().max() * 2**-11  # float16 rounding, nothing more
    frames, actions = _frames(4), np.zeros((4, model.action_dim("camera")), dtype=np.float32)
    model.start(frames, actions, seed=0)
    loaded.start(frames, actions, seed=0)
    future = np.zeros((1, 4, model.action_dim("camera")), dtype=np.float32)
    diff = np.abs(model.imagine(future, seed=1).astype(int) - loaded.imagine(future, seed=1).astype(int))
    assert diff.max() <= 8 and diff.mean() < 0.5  # a random tiny model, but only rounding apart
    # A weight beyond float16's range becomes inf when stored: refused, not loaded as garbage.
    save_file({**mixed, name: (state[name] * 1e6).half()}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="non-finite"):
        WorldModel.from_pretrained(path)


def test_a_config_json_that_is_not_text_is_a_checkpoint_error(model, tmp_path):
    path = model.save_pretrained(tmp_path / "ckpt")
    (path / "config.json").write_bytes(b"\xff\xfe{" + bytes(range(128, 256)))
    with pytest.raises(CheckpointError, match="config.json.*not valid JSON"):
        WorldModel.from_pretrained(path)

def test_missing_checkpoint_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        WorldModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        WorldModel.from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"")  # the weights file named instead of its folder
    with pytest.raises(CheckpointError, match="model.safetensors is a file: a checkpoint is the directory holding"):
        WorldModel.from_pretrained(tmp_path / "empty" / "model.safetensors")


def test_bad_api_inputs_raise_value_error_saying_what_was_expected(model):
    with pytest.raises(ValueError, match="before start"):
        model.step(np.zeros((2, 12), np.float32))
    with pytest.raises(ValueError, match="unknown action modality 'jetpack'"):
        model.start(_frames(4), modality="jetpack")
    with pytest.raises(ValueError, match="uint8"):
        model.start(_frames(4).astype(np.float32), modality="camera")
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        model.start(_frames(4)[..., :2], modality="camera")
    with pytest.raises(ValueError, match="at least frames_per_chunk"):
        model.start(_frames(1), modality="camera")
    with pytest.raises(ValueError, match="one row per frame"):
        model.start(_frames(4), np.zeros((3, 12), np.float32), modality="camera")
    model.start(_frames(4), modality="camera")
    with pytest.raises(ValueError, match=r"shape \(T, 12\)"):
        model.step(np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        model.step(np.full((2, 12), np.nan, np.float32))
    with pytest.raises(ValueError, match="whole chunks"):
        model.step(np.zeros((3, 12), np.float32))
    with pytest.raises(ValueError, match=r"\(B, N, 12\)"):
        model.imagine(np.zeros((2, 12), np.float32))
    # finite in float64, inf in float32: the output was all NaN (a black frame)
    with pytest.raises(ValueError, match="float32's range"):
        model.step(np.full((2, 12), 1e39))
    with pytest.raises(ValueError, match="real numbers"):
        model.imagine(np.zeros((1, 2, 12), np.complex64))
    for scale in (float("nan"), float("inf"), -2.0):
        with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
            model.step(np.zeros((2, 12), np.float32), guidance_scale=scale)
        with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
            model.imagine(np.zeros((1, 2, 12), np.float32), guidance_scale=scale)
    with pytest.raises(ValueError, match="steps must be an integer"):
        model.imagine(np.zeros((1, 2, 12), np.float32), steps=2.7)
    assert model.history_frames == 4  # nothing refused changed the stream


def test_start_keeps_the_newest_whole_chunks_and_observe_buffers_partial_chunks(model):
    model.start(_frames(5), modality="keys")
    assert model.history_frames == 4 and model.pending_frames == 0
    model.observe(_frames(1, seed=3), np.eye(7, dtype=np.float32)[:1])
    assert model.pending_frames == 1
    with pytest.raises(ValueError, match="waiting for their chunk"):
        model.step(np.zeros((2, 7), np.float32))
    model.observe(_frames(1, seed=4))
    assert model.pending_frames == 0 and model.history_frames == 6


def test_observe_after_step_replaces_the_predictions_with_the_real_frames(model):
    acts = np.random.default_rng(7).normal(size=(12, 6)).astype(np.float32)
    real = _frames(2, seed=9)
    window = model.config.max_history_chunks
    # Open-loop steps beyond the history window evict observed chunks; observe() must bring them back.
    model.start(_frames(4), acts[:4], modality="twist", seed=0)
    model.step(acts[4:4 + 2 * (window + 1)], seed=3)
    assert model.history_frames == 4 + 2 * (window + 1)
    model.observe(real, acts[4:6])
    assert model.history_frames == 6
    replaced = model.step(acts[6:8], seed=5)
    model.start(_frames(4), acts[:4], modality="twist", seed=0)  # the same history, never stepped
    model.observe(real, acts[4:6])
    np.testing.assert_array_equal(model.step(acts[6:8], seed=5), replaced)
    # A partial chunk after a step also replaces it, and nothing predicts from a half-observed chunk.
    model.step(acts[8:10], seed=6)
    model.observe(real[:1], acts[8:9])
    assert model.history_frames == 6 and model.pending_frames == 1
    with pytest.raises(ValueError, match="waiting for their chunk"):
        model.imagine(acts[None, 9:11])


def test_unseeded_steps_do_not_change_the_noise_of_later_observations(model):
    # A replay that steps between observations must see the history a plain replay sees.
    acts = np.random.default_rng(8).normal(size=(10, 6)).astype(np.float32)
    real = _frames(4, seed=10)
    model.start(_frames(4), acts[:4], modality="twist", seed=1)
    model.step(acts[4:6])
    model.step(acts[6:8])
    model.observe(real, acts[4:8])
    stepped = model.step(acts[8:10], seed=4)
    model.start(_frames(4), acts[:4], modality="twist", seed=1)
    model.observe(real, acts[4:8])
    np.testing.assert_array_equal(model.step(acts[8:10], seed=4), stepped)
    # Unseeded steps still draw fresh noise from call to call: the same history, a second draw.
    model.start(_frames(4), acts[:4], modality="twist", seed=1)
    model.observe(real[:2], acts[4:6])
    first_draw = model.step(acts[6:8])
    model.start(_frames(4), acts[:4], modality="twist", seed=1)
    model.step(acts[4:6])
    model.observe(real[:2], acts[4:6])
    assert not np.array_equal(model.step(acts[6:8]), first_draw)


def test_imagine_returns_distinct_candidates_and_leaves_the_live_stream_unchanged(model):
    model.start(_frames(4), modality="twist", seed=0)
    acts = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32) * 3
    before = model.stream.next_frame, len(model.stream.cache)
    futures = model.imagine(acts, seed=1)
    assert futures.shape == (4, 5, 16, 16, 3) and futures.dtype == np.uint8
    assert (model.stream.next_frame, len(model.stream.cache)) == before
    flat = futures.reshape(4, -1).astype(int)
    assert all(np.abs(flat[i] - flat[j]).max() > 0 for i in range(4) for j in range(i + 1, 4))
    # Same seed -> same candidates; and a step afterwards equals a step without imagine in between.
    np.testing.assert_array_equal(model.imagine(acts, seed=1), futures)
    after_imagine = model.step(np.zeros((2, 6), np.float32), seed=5)
    model.start(_frames(4), modality="twist", seed=0)
    np.testing.assert_array_equal(model.step(np.zeros((2, 6), np.float32), seed=5), after_imagine)
    # A candidate equals what step() predicts from the same history for the same actions and noise.
    model.start(_frames(4), modality="twist", seed=0)
    single = model.imagine(acts[:1, :4], seed=8)[0]
    model.start(_frames(4), modality="twist", seed=0)
    stepped = model.step(acts[0, :4], generator=torch.Generator().manual_seed(8))
    assert np.abs(single.astype(int) - stepped.astype(int)).max() <= 1


def test_model_facts(model):
    assert model.modalities == ["camera", "robot", "twist", "keys"]
    assert [model.action_dim(m) for m in model.modalities] == [12, 10, 6, 7]
    assert model.frames_per_chunk == 2 and model.resolution == (16, 16)
    with pytest.raises(ValueError):
        model.action_dim("jetpack")


def test_shared_noise_makes_candidates_differ_only_by_their_actions(model):
    model.start(_frames(4), modality="twist", seed=0)
    acts = np.random.default_rng(0).normal(size=(3, 4, 6)).astype(np.float32)
    acts[1] = acts[0]  # candidates 0 and 1 ask for the same future
    shared = model.imagine(acts, seed=2, shared_noise=True)
    np.testing.assert_array_equal(shared[0], shared[1])
    assert np.abs(shared[0].astype(int) - shared[2].astype(int)).max() > 0
    # each candidate equals what it gets alone with the same seed, up to one level of rounding: a batch of
    # 1 and a batch of 3 take different float summation orders (seen with one torch thread)
    alone = model.imagine(acts[2:], seed=2, shared_noise=True)[0]
    assert np.abs(alone.astype(int) - shared[2].astype(int)).max() <= 1
    independent = model.imagine(acts, seed=2)
    assert np.abs(independent[0].astype(int) - independent[1].astype(int)).max() > 0


@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_residual_decoding_adds_the_decoded_change_to_the_last_real_frame(model, scale):
    residual = WorldModel(preset("tiny", residual_decoding=True, residual_change_scale=scale))
    residual.load_state_dict(model.state_dict())
    frames = _frames(4, h=16, w=16)  # the tiny model's resolution: no resize
    acts = np.random.default_rng(1).normal(size=(2, 4, 6)).astype(np.float32)
    outputs = []
    for wm in (model, residual):
        wm.start(frames, modality="twist", seed=0)
        outputs.append(wm.imagine(acts, seed=3).astype(np.float64) / 127.5 - 1)
    plain, with_residual = outputs
    last = frames[-1].astype(np.float64) / 127.5 - 1
    with torch.no_grad():
        x = torch.from_numpy(frames[-1:]).permute(0, 3, 1, 2).float()[None] / 127.5 - 1
        recon = model.codec.decode(model.codec.encode(x))[0, 0].permute(1, 2, 0).double().numpy()
    # The decoded change (plain - recon) is added whole, or the configured fraction of it.
    expected = np.clip(last + scale * (plain - recon), -1, 1)
    np.testing.assert_allclose(with_residual, expected, atol=1.01 / 127.5)  # both sides rounded to uint8 once
    with pytest.raises(ConfigError, match="residual_change_scale"):
        preset("tiny", residual_decoding=True, residual_change_scale=0.0)
    # the codec's own error is gone: decoding the last frame's latent gives the last frame back
    assert np.abs(with_residual - plain).max() > 0.05


def test_roll_out_latents_samples_clips_from_their_own_histories_as_start_and_step_do(model):
    residual = WorldModel(preset("tiny", residual_decoding=True))
    residual.load_state_dict(model.state_dict())
    clips = [_frames(4, h=16, w=16, seed=s) for s in (0, 1)]
    acts = np.random.default_rng(2).normal(size=(2, 8, 6)).astype(np.float32)
    stepped = []
    for frames, clip_actions in zip(clips, acts):
        residual.start(frames, clip_actions[:4], modality="twist", seed=5)
        stepped.append(residual.step(clip_actions[4:]).astype(int))
    frames_t = torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    history = residual.codec.encode(frames_t)
    for row in (0, 1):  # each clip alone with the generators start(seed=5) gives the history and step()
        latents = residual.roll_out_latents(history[row:row + 1], torch.from_numpy(acts[row:row + 1]), "twist",
                                            torch.Generator().manual_seed(7), torch.Generator().manual_seed(5))
        residual.start(clips[row], acts[row, :4], modality="twist", seed=5)  # the anchor of this clip
        assert np.abs(residual._decode(latents)[0].astype(int) - stepped[row]).max() <= 1
    both = residual.roll_out_latents(history, torch.from_numpy(acts), "twist", torch.Generator().manual_seed(7))
    assert both.shape == (2, history.shape[1], 4, *history.shape[3:])
    assert (both[0] - both[1]).abs().max() > 1e-3  # two histories, two futures
    with pytest.raises(ValueError, match="whole chunks"):
        residual.roll_out_latents(history[:, :, :3], torch.from_numpy(acts), "twist", torch.Generator())


def test_reconstruct_is_the_codec_ceiling_and_leaves_the_stream_alone(model):
    residual = WorldModel(preset("tiny", residual_decoding=True))
    residual.load_state_dict(model.state_dict())
    frames = _frames(4, h=16, w=16)
    acts = np.random.default_rng(1).normal(size=(1, 4, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="start"):
        residual.reconstruct(frames)
    residual.start(frames, modality="twist", seed=0)
    before = residual.imagine(acts, seed=3)
    future = _frames(3, h=16, w=16, seed=5)
    ceiling = residual.reconstruct(np.concatenate([frames[-1:], future]))
    # The newest observed frame comes back exactly (its codec error cancels); other frames do not.
    assert np.abs(ceiling[0].astype(int) - frames[-1]).max() <= 1
    assert np.abs(ceiling[1:].astype(int) - future).mean() > 1
    # Exact latents get their whole change, however much a checkpoint shrinks its predictions'.
    shrinking = WorldModel(preset("tiny", residual_decoding=True, residual_change_scale=0.5))
    shrinking.load_state_dict(model.state_dict())
    shrinking.start(frames, modality="twist", seed=0)
    np.testing.assert_array_equal(shrinking.reconstruct(np.concatenate([frames[-1:], future])), ceiling)
    # Without residual decoding it is the plain codec round trip.
    model.start(frames, modality="twist", seed=0)
    with torch.no_grad():
        x = torch.from_numpy(future).permute(0, 3, 1, 2).float()[None] / 127.5 - 1
        plain = ((model.codec.decode(model.codec.encode(x))[0] + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(model.reconstruct(future), plain, atol=1)
    np.testing.assert_array_equal(residual.imagine(acts, seed=3), before)


def test_one_shot_error_scores_the_estimate_from_pure_noise_and_a_copy_of_the_newest_latent(model):
    frames = _frames(6, h=16, w=16)
    acts = np.random.default_rng(5).normal(size=(6, 6)).astype(np.float32) * 0.3
    model.transformer.zero_output_head()  # velocity 0 everywhere: the estimate noise - v is the starting noise
    model.start(frames[:4], acts[:4], modality="twist", seed=0)
    probe = model.one_shot_error(frames[4:], acts[4:], seed=7)
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None] / 127.5 - 1
        latents = model.codec.encode(x)
    target = latents[:, :, 4:]
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(7))
    assert probe["one_shot"] == pytest.approx(float((noise - target).pow(2).mean()), rel=1e-5)
    copy_cells = (latents[:, :, 3:4] - target).pow(2).mean(dim=1)
    assert probe["copy_last"] == pytest.approx(float(copy_cells.mean()), rel=1e-5)
    unchanged = copy_cells < STILL_CELL_MSE
    assert probe["still_cells"] == pytest.approx(float(unchanged.float().mean()))
    if unchanged.any():
        assert probe["one_shot_still"] == pytest.approx(float((noise - target).pow(2).mean(dim=1)[unchanged].mean()),
                                                        rel=1e-5)
    # Decoded: the estimate and the copy through the decoder, scored against the real frames.
    with torch.no_grad():
        decoded = ((model.codec.decode(torch.cat([noise, latents[:, :, 3:4].expand_as(target)])) + 1) * 127.5)
    decoded = decoded.round().clamp(0, 255).permute(0, 1, 3, 4, 2).numpy()
    for row, key in ((0, "one_shot_psnr"), (1, "copy_last_psnr")):
        mse = ((decoded[row] - frames[4:].astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
        assert probe[key] == pytest.approx(float(np.mean(10 * np.log10(255.0 ** 2 / mse))), abs=1e-3)
    # A still scene: copying the last frame is exact, every cell is still.
    still = np.repeat(frames[:1], 6, axis=0)
    model.start(still[:4], acts[:4], modality="twist", seed=0)
    probe = model.one_shot_error(still[4:], acts[4:], seed=7)
    assert probe["copy_last"] == 0.0 and probe["still_cells"] == 1.0
    assert probe["one_shot_still"] == pytest.approx(probe["one_shot"])


def test_one_shot_error_leaves_the_stream_alone_and_checks_its_inputs(model):
    frames = _frames(6, h=16, w=16)
    acts = np.random.default_rng(5).normal(size=(6, 6)).astype(np.float32) * 0.3
    outs = []
    for probe in (False, True):
        model.start(frames[:4], acts[:4], modality="twist", seed=0)
        if probe:
            model.one_shot_error(frames[4:], acts[4:], seed=7)
        outs.append((model.step(acts[4:]), model.imagine(acts[None, 4:])))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    model.start(frames[:4], acts[:4], modality="twist", seed=0)
    with pytest.raises(ValueError, match="the 2 frames of one chunk, got 3"):
        model.one_shot_error(frames[3:], acts[3:])
    with pytest.raises(ValueError, match="one row per frame"):
        model.one_shot_error(frames[4:], acts[3:])
    model.observe(frames[4:5], acts[4:5])
    with pytest.raises(ValueError, match="nothing pending"):
        model.one_shot_error(frames[4:], acts[4:])


def test_bfloat16_precision_stays_close_to_float32(model):
    frames = _frames(6, h=16, w=16)
    acts = np.random.default_rng(4).normal(size=(6, 6)).astype(np.float32) * 0.3
    outputs = {}
    for precision in ("float32", "bfloat16", "float32"):
        model.set_precision(precision)
        assert model.precision == precision
        model.start(frames[:4], acts[:4], modality="twist", seed=0)
        outputs.setdefault(precision, []).append(model.imagine(acts[None, 4:], seed=1)[0].astype(np.int16))
    np.testing.assert_array_equal(outputs["float32"][0], outputs["float32"][1])  # switching back is exact
    diff = np.abs(outputs["bfloat16"][0] - outputs["float32"][0])
    assert 0 < diff.max() and diff.mean() < 2.0  # bf16 rounding shows, but only as rounding
    with pytest.raises(ValueError, match="precision must be one of"):
        model.set_precision("float16")


def test_bfloat16_is_refused_when_its_forward_pass_disagrees_with_float32(model, monkeypatch):
    # A backend whose bf16 kernels are wrong (as oneDNN's convolution was for 4x4 patches on AMX CPUs).
    from astra_ros.model.precision import UnreliablePrecision
    from astra_ros.model.transformer import AstraTransformer

    frames = _frames(4, h=16, w=16)
    model.set_precision("float32")
    model.start(frames, modality="twist", seed=0)
    honest = AstraTransformer.forward

    def broken_under_autocast(self, latents, *args, **kwargs):
        velocity, kv = honest(self, latents, *args, **kwargs)
        return (velocity.flip(-1) if torch.is_autocast_enabled("cpu") else velocity), kv

    monkeypatch.setattr(AstraTransformer, "forward", broken_under_autocast)
    with pytest.raises(UnreliablePrecision, match=r"differs from fp32 by \d+.*run it in float32"):
        model.set_precision("bfloat16")
    assert model.precision == "float32" and model.modality == "twist"  # nothing changed, the stream kept
    monkeypatch.setattr(AstraTransformer, "forward", honest)
    model.set_precision("bfloat16")  # the honest kernels pass the same check
    assert model.precision == "bfloat16"
    model.set_precision("float32")


def test_a_checkpoint_trained_without_motion_inputs_loads_with_them_and_predicts_the_same(model, tmp_path):
    """What `astra-train --init` does when a recipe turns on `action_motion` for an older checkpoint."""
    rng = np.random.default_rng(5)
    acts = rng.normal(0.0, 0.05, size=(8, 12)).astype(np.float32)
    path = model.save_pretrained(tmp_path / "plain")
    config = json.loads((path / "config.json").read_text())
    config["action_motion"] = True
    (path / "config.json").write_text(json.dumps(config))
    moving = WorldModel.from_pretrained(path)
    assert moving.transformer.action_encoder.uses_motion
    outs = []
    for wm in (model, moving):
        wm.start(_frames(4), acts[:4], modality="camera", seed=2)
        outs.append(wm.step(acts[4:8], seed=3))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_one_reading_of_random_specs_reproducible_and_leaving_the_callers_rng_alone(model, tmp_path):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = load_world_model("random:tiny")
    assert torch.equal(torch.rand(3), before)  # the caller's RNG did not move
    b = load_world_model("random:tiny")
    assert a.resolution == (32, 32)  # tiny is drawn at 32x32 for every tool, not the preset's 16x16
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert load_world_model("random:cpu_default").resolution == preset("cpu_default").resolution

    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_world_model(tmp_path / "ckpt")
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_world_model("random:nope")
    with pytest.raises(CheckpointError):
        load_world_model(tmp_path / "missing")
