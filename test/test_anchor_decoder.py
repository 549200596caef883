"""Anchor decoding: warping, the cost volume, the residual-decoding start, and that it learns motion."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from astra_ros.model import WorldModel, preset
from astra_ros.model.anchor_decoder import AnchorDecoder, correlation, warp
from astra_ros.model.config import ConfigError


def test_warp_moves_pixels_by_the_flow():
    image = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    flow = torch.zeros(2, 2, 12, 16)
    flow[0, 0] = 3.0  # sample 3 px to the right: the content moves left
    flow[1, 1] = -2.0  # sample 2 px up: the content moves down
    out = warp(image, flow)
    torch.testing.assert_close(out[0, :, :, :13], image[0, :, :, 3:])
    torch.testing.assert_close(out[1, :, 2:], image[1, :, :10])
    torch.testing.assert_close(out[0, :, :, 13:], image[0, :, :, 15:].expand(-1, -1, 3))  # edges repeat
    half = torch.zeros(1, 2, 12, 16)
    half[0, 0] = 0.5  # half a pixel: the mean of the two neighbours
    torch.testing.assert_close(warp(image[:1], half)[0, :, :, :15], (image[0, :, :, :15] + image[0, :, :, 1:]) / 2)


def test_correlation_is_the_channel_mean_product_at_every_shift():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 5, 6, 7, generator=g), torch.randn(2, 5, 6, 7, generator=g)
    cost = correlation(a, b, radius=2)
    assert cost.shape == (2, 25, 6, 7)
    for index, (dy, dx) in enumerate((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)):
        for y, x in ((0, 0), (3, 4), (5, 6)):
            inside = 0 <= y + dy < 6 and 0 <= x + dx < 7
            expected = (a[:, :, y, x] * b[:, :, y + dy, x + dx]).mean(dim=1) if inside else torch.zeros(2)
            torch.testing.assert_close(cost[:, index, y, x], expected)


def _world_models():
    plain = WorldModel(preset("tiny", residual_decoding=True))
    anchored = WorldModel(preset("tiny", residual_decoding=True, anchor_decoder_width=8))
    missing, unexpected = anchored.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("anchor_decoder.") for k in missing)
    return plain, anchored


def _frames(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(count, 16, 16, 3), dtype=np.uint8)


def test_an_untrained_anchor_decoder_is_residual_decoding():
    torch.manual_seed(0)
    plain, anchored = _world_models()
    frames = _frames(4)
    acts = np.random.default_rng(1).normal(size=(2, 4, 6)).astype(np.float32)
    outputs = []
    for wm in (plain, anchored):
        wm.start(frames, modality="twist", seed=0)
        outputs.append(wm.imagine(acts, seed=3).astype(int))
        outputs.append(wm.reconstruct(_frames(3, seed=5)).astype(int))
    assert np.abs(outputs[0] - outputs[2]).max() <= 1 and np.abs(outputs[1] - outputs[3]).max() <= 1
    assert np.abs(outputs[0] - frames[-1]).mean() > 1  # and that is not simply the last frame


def test_anchor_decoder_moves_the_anchor_and_its_decoding_along_its_flow():
    torch.manual_seed(0)
    decoder = AnchorDecoder(latent_channels=4, spatial_factor=4, width=8, search_radius=1)
    with torch.no_grad():
        decoder.coarse_flow.bias.copy_(torch.tensor([0.5, 0.0]))  # 0.5 cells = 2 px to the right
    g = torch.Generator().manual_seed(2)
    anchor, anchor_coarse, coarse = (torch.rand(3, 3, 16, 16, generator=g) * 1.6 - 0.8 for _ in range(3))
    anchor_latents, latents = torch.randn(3, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, generator=g)
    out = decoder(anchor, anchor_latents, anchor_coarse, latents, coarse)
    flow = torch.zeros(3, 2, 16, 16)
    flow[:, 0] = 2.0
    weight = torch.sigmoid(torch.tensor(8.0))
    expected = (warp(anchor, flow) + weight * (coarse - warp(anchor_coarse, flow))).clamp(-1, 1)
    torch.testing.assert_close(out, expected)


def _shifted_pairs(count, generator, size=24, max_shift=3):
    """Smooth random textures and the same texture moved by a whole number of pixels."""
    big = size + 2 * max_shift
    texture = F.interpolate(torch.rand(count, 3, big // 2, big // 2, generator=generator) * 2 - 1, size=(big, big),
                            mode="bilinear", align_corners=False)
    shifts = torch.randint(-max_shift, max_shift + 1, (count, 2), generator=generator)
    anchor = texture[:, :, max_shift:max_shift + size, max_shift:max_shift + size]
    target = torch.stack([texture[i, :, max_shift + dy:max_shift + dy + size, max_shift + dx:max_shift + dx + size]
                          for i, (dy, dx) in enumerate(shifts.tolist())])
    return anchor, target


def test_anchor_decoder_learns_motion_that_residual_decoding_cannot_show():
    """A stand-in codec (4x average pooling, nearest upsampling) keeps where things went but not their
    detail: residual decoding of a moved texture stays far off, the trained anchor decoder recovers it."""
    torch.manual_seed(0)
    encode = lambda x: F.avg_pool2d(x, 4)  # noqa: E731
    decode = lambda z: F.interpolate(z, scale_factor=4, mode="nearest")  # noqa: E731
    decoder = AnchorDecoder(latent_channels=3, spatial_factor=4, width=8, search_radius=1)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def inputs(anchor, target):
        za, zt = encode(anchor), encode(target)
        return anchor, za, decode(za), zt, decode(zt)

    for _ in range(200):
        anchor, target = _shifted_pairs(16, g)
        loss = F.mse_loss(decoder(*inputs(anchor, target)), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    anchor, target = _shifted_pairs(64, torch.Generator().manual_seed(99))
    with torch.no_grad():
        args = inputs(anchor, target)
        ours = F.mse_loss(decoder(*args), target).item()
    residual = F.mse_loss((anchor + args[4] - args[2]).clamp(-1, 1), target).item()
    copy = F.mse_loss(anchor, target).item()
    assert ours < 0.6 * residual and residual < copy  # measured: 0.080, 0.169, 0.227


def test_anchor_decoder_config_and_checkpoints(tmp_path):
    with pytest.raises(ConfigError, match="needs residual_decoding"):
        preset("tiny", anchor_decoder_width=8)
    with pytest.raises(ConfigError, match=">= 0"):
        preset("tiny", residual_decoding=True, anchor_decoder_width=-1)
    with pytest.raises(ConfigError, match="residual_change_scale"):
        preset("tiny", residual_decoding=True, anchor_decoder_width=8, residual_change_scale=0.5)
    torch.manual_seed(0)
    plain, anchored = _world_models()
    with torch.no_grad():
        for p in anchored.anchor_decoder.parameters():
            p.add_(0.01 * torch.randn_like(p))  # as after training
    anchored.save_pretrained(tmp_path / "trained")
    loaded = WorldModel.from_pretrained(tmp_path / "trained")
    for key, value in anchored.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    # A checkpoint from before anchor decoding takes one on: it starts as the residual decoding it had.
    plain.save_pretrained(tmp_path / "plain")
    grown = WorldModel.from_pretrained(tmp_path / "plain", config_overrides={"anchor_decoder_width": 8})
    assert grown.anchor_decoder is not None
    torch.testing.assert_close(grown.anchor_decoder.blend.bias, torch.tensor([8.0]))


@pytest.mark.parametrize("height, width, factor, channels", [(64, 64, 8, 32), (48, 80, 4, 16)])
def test_the_memory_estimate_covers_every_activation_of_a_decoded_frame(height, width, factor, channels):
    decoder = AnchorDecoder(16, factor, channels, 3)
    produced = []
    for module in decoder.modules():
        if not list(module.children()):
            module.register_forward_hook(lambda m, i, out: produced.append(out.numel()))
    h, w = height // factor, width // factor
    frames = [torch.rand(1, 3, height, width) for _ in range(3)]
    with torch.no_grad():
        decoder(frames[0], torch.rand(1, 16, h, w), frames[1], torch.rand(1, 16, h, w), frames[2])
    estimate = decoder.activation_floats(height, width)
    # Above the sum of all its layers' outputs (fewer are alive at once), without being far above it.
    assert sum(produced) <= estimate <= 3 * sum(produced)


def test_imagine_batches_leave_room_for_the_anchor_decoder():
    plain = WorldModel(preset("cpu_default", residual_decoding=True))
    anchored = WorldModel(preset("cpu_default", residual_decoding=True, anchor_decoder_width=32))
    assert anchored.default_imagine_batch(decoded_frames=8) < plain.default_imagine_batch(decoded_frames=8)
