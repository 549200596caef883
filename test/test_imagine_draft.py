"""``imagine(draft=True)``: the planner's fast path (references turned on the latent grid, plain decoding)."""

import numpy as np
import torch
import torch.nn.functional as F

from astra_ros.model import WorldModel, preset
from astra_ros.model.view_rotation import chain_rotations, latent_intrinsics, rotate_view
from synthetic_inputs import smooth_frames, twist_actions


def _model(seed=0):
    torch.manual_seed(seed)
    model = WorldModel(preset("tiny", latent_delta=True, prediction="x0", residual_decoding=True,
                             rotation_reference=True, anchor_decoder_width=8))
    with torch.no_grad():
        model.transformer.proj_out.weight.normal_(0, 0.05)  # predictions that depend on the input
    return model.eval()


def test_latent_intrinsics_put_a_point_in_the_cell_that_holds_its_pixel():
    K = torch.tensor([[50.0, 0.0, 31.5], [0.0, 48.0, 30.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    points = torch.tensor([[0.3, -0.2, 2.0], [-1.0, 0.5, 3.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    pixels = (K @ points.T).T
    pixels = pixels[:, :2] / pixels[:, 2:]
    cells = (latent_intrinsics(K, 8) @ points.T).T
    cells = cells[:, :2] / cells[:, 2:]
    # Cell j covers pixels 8j .. 8j+7: pixel u lies at cell coordinate (u + 0.5) / 8 - 0.5.
    torch.testing.assert_close(cells, (pixels + 0.5) / 8 - 0.5)
    torch.testing.assert_close(latent_intrinsics(K, 8)[:2, 2], torch.tensor([3.5, (30.0 + 0.5) / 8 - 0.5],
                                                                            dtype=torch.float64))


def test_turned_latents_match_the_turned_image_pooled_to_the_latent_grid():
    model = _model()
    f = model.codec.spatial_factor
    h, w = model.resolution
    image = torch.from_numpy(smooth_frames(1, h)[0]).permute(2, 0, 1)[None].float() / 127.5 - 1
    yaw = torch.tensor(twist_actions(3, 0.15, forward=0.02))[None].double()
    rotations = chain_rotations("twist", yaw, yaw[0, 0])  # (1, 3, 3, 3)
    turned = model._turned_latents(F.avg_pool2d(image, f), rotations)  # (1, 3 channels, 3 frames, h/f, w/f)
    expected = F.avg_pool2d(rotate_view(image.expand(3, -1, -1, -1), model.intrinsics, rotations[0]), f)
    expected = expected.transpose(0, 1)[None]
    inner = (slice(None), slice(None), slice(None), slice(1, -1), slice(1, -1))  # the edge repeats differently
    error = (turned - expected)[inner].abs().mean()
    moved = (F.avg_pool2d(image, f)[:, :, None] - expected)[inner].abs().mean()
    assert moved > 0.05  # the view did turn by more than a cell
    assert error < 0.25 * moved  # and the latent grid turned with it


def _spy_predictions(model):
    seen = []
    original = model._predict

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out)
        return out
    model._predict = spy
    return seen


def _count_codec(model):
    counts = {"encoded": 0, "decoded": 0, "anchor": 0}
    encode, decode, anchor = model.codec.encode, model.codec.decode, model.anchor_decoder.forward

    def counted_encode(frames, *a, **k):
        counts["encoded"] += frames.shape[0] * frames.shape[1]
        return encode(frames, *a, **k)

    def counted_decode(latents):
        counts["decoded"] += latents.shape[0] * latents.shape[2]
        return decode(latents)

    def counted_anchor(*a, **k):
        counts["anchor"] += 1
        return anchor(*a, **k)
    model.codec.encode, model.codec.decode, model.anchor_decoder.forward = counted_encode, counted_decode, counted_anchor
    return counts


def test_a_turning_draft_encodes_nothing_and_decodes_only_the_returned_frames():
    model = _model()
    size = model.resolution[0]
    model.start(smooth_frames(4, size), twist_actions(4, 0.1, forward=0.02), modality="twist", seed=0)
    candidates = np.stack([twist_actions(6, yaw, forward=0.02) for yaw in (-0.1, 0.0, 0.1)])
    counts = _count_codec(model)
    full = model.imagine(candidates, seed=1, shared_noise=True, decode="last")
    assert counts["encoded"] > 0 and counts["anchor"] > 0  # the full path re-encodes turned frames every chunk
    counts.update(encoded=0, decoded=0, anchor=0)
    draft = model.imagine(candidates, seed=1, shared_noise=True, decode="last", draft=True)
    assert counts == {"encoded": 0, "decoded": 3, "anchor": 0}
    assert draft.shape == full.shape == (3, 1, size, size, 3)
    assert np.abs(draft[0].astype(int) - draft[2].astype(int)).mean() > 0.5  # the turn shows
    model.start(smooth_frames(4, size), twist_actions(4, 0.1, forward=0.02), modality="twist", seed=0)
    again = model.imagine(candidates, seed=1, shared_noise=True, decode="last", draft=True)
    assert np.array_equal(again, draft)  # same seed, same futures


def test_where_nothing_turns_a_draft_predicts_the_same_latents_and_decodes_them_plainly():
    model = _model(3)
    size = model.resolution[0]
    robot = np.random.default_rng(0).normal(0, 0.1, size=(10, 10)).astype(np.float32)
    model.start(smooth_frames(4, size), robot[:4], modality="robot", seed=0)
    seen = _spy_predictions(model)
    full = model.imagine(robot[None, 4:], seed=1, decode="all")
    full_latents = torch.cat(seen, dim=2)
    seen.clear()
    draft = model.imagine(robot[None, 4:], seed=1, decode="all", draft=True)
    draft_latents = torch.cat(seen, dim=2)
    assert torch.equal(draft_latents, full_latents)
    with torch.no_grad():
        plain = model._to_uint8(model.codec.decode(draft_latents))
    assert np.array_equal(draft, plain)
    assert not np.array_equal(draft, full)  # the full path decodes through the anchor decoder
