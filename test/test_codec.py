"""The latent codec interface (diffusers AutoencoderKL, the CPU default)."""

import torch

from astra_ros.model import CodecConfig
from astra_ros.model.codec import LatentCodec


def test_codec_shapes_factors_and_normalisation():
    torch.manual_seed(0)
    codec = LatentCodec(CodecConfig(latent_channels=4, block_out_channels=(8, 8, 8), norm_num_groups=4)).eval()
    assert codec.spatial_factor == 4 and codec.temporal_factor == 1
    frames = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        codec.set_latent_statistics(frames)
        z = codec.encode(frames)
        assert z.shape == (2, 4, 3, 8, 8)
        # after measuring statistics the latents are standardised per channel
        torch.testing.assert_close(z.mean(dim=(0, 2, 3, 4)), torch.zeros(4), atol=1e-4, rtol=0)
        torch.testing.assert_close(z.std(dim=(0, 2, 3, 4)), torch.ones(4), atol=1e-3, rtol=0)
        out = codec.decode(z)
    assert out.shape == frames.shape and out.min() >= -1 and out.max() <= 1
    # frames are coded independently: a frame's latent does not depend on its neighbours
    with torch.no_grad():
        alone = codec.encode(frames[:, 1:2])
    torch.testing.assert_close(alone[:, :, 0], z[:, :, 1], atol=1e-5, rtol=1e-5)
