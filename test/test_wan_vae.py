"""The streaming Wan VAE codes 1 + 4k frames into 1 + k latents and equals diffusers' whole-video coding."""

import pytest
import torch
from diffusers import AutoencoderKLWan

from astra_ros.model.wan_vae import WanStreamDecoder, WanStreamEncoder, frames_for_latents, latents_for_frames


def _vae():
    torch.manual_seed(0)
    # Small width, Wan2.1's layout: 3 levels (8x spatial), temporal downsampling at the last two (4x)
    return AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                            temperal_downsample=[False, True, True], latents_mean=[0.0] * 4,
                            latents_std=[1.0] * 4).eval()


def test_frame_and_latent_counts():
    assert [latents_for_frames(n) for n in (0, 1, 4, 5, 8, 9, 81)] == [0, 1, 1, 2, 2, 3, 21]
    assert [frames_for_latents(n) for n in (0, 1, 2, 21)] == [0, 1, 5, 81]
    with pytest.raises(ValueError):
        latents_for_frames(-1)


def test_streamed_encoding_and_decoding_equal_whole_video_coding():
    vae = _vae()
    torch.manual_seed(1)
    video = torch.rand(1, 3, 13, 32, 32) * 2 - 1  # 1 + 4*3 frames -> 4 latents
    with torch.no_grad():
        ref_z = vae.encode(video).latent_dist.mode()
        ref_x = vae.decode(ref_z).sample
    assert ref_z.shape == (1, 4, 4, 4, 4) and ref_x.shape == video.shape

    # Frames arrive one, then two, then ... at a time, as from a camera
    enc = WanStreamEncoder(vae)
    pieces, counts, start = [], [], 0
    for n in (1, 2, 3, 1, 4, 2):
        z = enc.push(video[:, :, start:start + n])
        start += n
        pieces.append(z)
        counts.append(z.shape[2])
    assert counts == [1, 0, 1, 0, 1, 1]  # a latent appears exactly when its group of 4 frames is complete
    assert enc.pending == 0 and enc.frames_seen == 13
    z = torch.cat(pieces, dim=2)
    assert ref_z.abs().mean() > 0.01
    torch.testing.assert_close(z, ref_z, atol=1e-5, rtol=1e-4)

    dec = WanStreamDecoder(vae)
    frames = [dec.push(ref_z[:, :, :1]), dec.push(ref_z[:, :, 1:3]), dec.push(ref_z[:, :, 3:])]
    assert [f.shape[2] for f in frames] == [1, 8, 4]
    torch.testing.assert_close(torch.cat(frames, dim=2), ref_x, atol=1e-5, rtol=1e-4)


def test_the_stream_carries_the_past_and_reset_forgets_it():
    vae = _vae()
    torch.manual_seed(2)
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    other = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    enc = WanStreamEncoder(vae)
    enc.push(video[:, :, :1])
    with_past = enc.push(video[:, :, 1:])
    enc.reset()
    enc.push(other)  # another first frame: the second latent must change, it sees the frames before it
    with_other_past = enc.push(video[:, :, 1:])
    assert (with_past - with_other_past).abs().max() > 1e-3
    enc.reset()
    assert enc.pending == 0 and enc.latents_out == 0
    torch.testing.assert_close(enc.push(video)[:, :, 1:], with_past, atol=1e-5, rtol=1e-4)


def test_bad_input_is_refused():
    vae = _vae()
    enc = WanStreamEncoder(vae)
    with pytest.raises(ValueError, match="B, 3, T, H, W"):
        enc.push(torch.zeros(1, 4, 1, 32, 32))
    enc.push(torch.zeros(1, 3, 2, 32, 32))
    with pytest.raises(ValueError, match="do not continue"):
        enc.push(torch.zeros(1, 3, 1, 16, 16))
    with pytest.raises(ValueError, match="latents must be"):
        WanStreamDecoder(vae).push(torch.zeros(1, 3, 1, 4, 4))
    wan22_like = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True])
    with pytest.raises(ValueError, match="4x temporal"):
        WanStreamEncoder(wan22_like)
