"""The faster paths of a step give the plain paths' frames bit for bit, with less work."""

import numpy as np
import pytest
import torch

from astra_ros.model import WorldModel
from astra_ros.model import codec_batching
from astra_ros.model.step_profile import StepRecorder


@pytest.fixture(scope="module")
def wm():
    return WorldModel.from_pretrained("default")


@pytest.fixture
def threads():
    """Sets torch's thread count for one test and puts the old one back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _inputs():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (10, 64, 64, 3), dtype=np.uint8)
    actions = (rng.normal(size=(10, 6)) * 0.3).astype(np.float32)  # turning: rotation references at work
    future = (rng.normal(size=(3, 6, 6)) * 0.3).astype(np.float32)
    return video, actions, future


def _run(wm, reuse: bool, fuse: bool = True,
         together: bool = True) -> tuple[list[np.ndarray], StepRecorder, StepRecorder]:
    """Frames of a fixed session (start, open-loop steps, observe, step, imagine) in float uint8 units
    (before rounding, so any difference shows), what the first step ran and what the open-loop one ran."""
    video, actions, future = _inputs()
    wm.reuse_views, wm.fuse_passes, wm.batch_codec_calls = reuse, fuse, together
    frames = []
    original = WorldModel._to_uint8

    def capture(x):
        frames.append(((x + 1) * 127.5).numpy().copy())
        return original(x)

    recorder, open_loop = StepRecorder(wm), StepRecorder(wm)
    try:
        wm._to_uint8 = capture
        wm.start(video[:8], actions[:8], modality="twist", seed=0)
        with recorder.recording():
            wm.step(actions[:2], seed=1)
        with open_loop.recording():
            wm.step(actions[2:6], seed=2)
        wm.observe(video[8:], actions[8:])
        wm.step(actions[:2], seed=3)
        wm.imagine(future[:1], seed=4)
        wm.imagine(future, seed=5, decode=[0, 3, 5])
        wm.imagine(future, seed=6, steps=3, decode="last")  # a planner's: the fused pass is the first of 3
    finally:
        del wm._to_uint8
        wm.reuse_views = wm.fuse_passes = wm.batch_codec_calls = True
    return frames, recorder, open_loop


@pytest.mark.parametrize("reuse, fuse, together", [(True, False, False), (False, True, False), (False, False, True),
                                                   (True, True, True)])
def test_fast_paths_change_no_bit_and_do_less(wm, threads, reuse, fuse, together):
    threads(2)
    plain, plain_ran, plain_loop = _run(wm, reuse=False, fuse=False, together=False)
    fast, fast_ran, fast_loop = _run(wm, reuse=reuse, fuse=fuse, together=together)
    # Batched codec calls run where they keep every bit (on this project's machines at 2 threads).
    together = together and wm._codec_batching_exact()
    assert len(plain) == len(fast) == 6
    for a, b in zip(plain, fast):
        assert a.shape == b.shape
        assert np.array_equal(a, b), f"max |diff| {np.abs(a - b).max()} in uint8 units"
    # First step after observing: the chunk's 2 turned views, encoded for its references, are not
    # encoded again for its anchor decoding.
    assert (plain_ran.encoded, fast_ran.encoded) == (5, 3 if reuse else 5)
    # Its 2 predicted frames and their 2 turned anchors: decoded in one call instead of two.
    assert (plain_ran.decoded, fast_ran.decoded) == (4, 4)
    assert (plain_ran.decoder_calls, fast_ran.decoder_calls) == (2, 1 if together else 2)
    # Open loop (2 chunks, each turning a predicted frame for its references and the observed one for
    # its decoding): per chunk 3 + 2 frames encoded, in one call with the views kept for decoding.
    assert (plain_loop.encoded, fast_loop.encoded) == (10, 10)
    assert (plain_loop.encoder_calls, fast_loop.encoder_calls) == (4, 2 if together and reuse else 4)
    assert (plain_loop.decoder_calls, fast_loop.decoder_calls) == (4, 2 if together else 4)
    # The plain step runs the last observed chunk's pass in start(), then predicts (32 tokens over 128
    # cached) and appends its own chunk; fused, the observed chunk's pass and the prediction are one
    # (64 tokens over the 3 chunks before), and the step's own chunk waits for the next prediction.
    tokens = 2 * 16
    assert plain_ran.passes == [(1, tokens, 4 * tokens), (1, tokens, 4 * tokens)]
    assert fast_ran.passes == ([(1, 2 * tokens, 3 * tokens)] if fuse else plain_ran.passes)


def test_views_are_not_shared_across_calls_or_frames(wm):
    video, actions, _ = _inputs()
    wm.start(video[:8], actions[:8], modality="twist", seed=0)
    wm.step(actions[:2], seed=1)
    assert wm._views.base is wm._anchor[0]
    wm.start(video[2:10], actions[2:10], modality="twist", seed=0)
    recorder = StepRecorder(wm)
    with recorder.recording():
        wm.step(actions[:2], seed=1)
    assert recorder.encoded == 3 and wm._views.base is wm._anchor[0]
    # A deferred chunk is computed before anything reads the cache: the count is whole.
    assert wm.stream.num_history_chunks == len(wm.stream.cache) == wm.config.max_history_chunks
    with torch.no_grad():
        assert wm._views.lookup(wm._anchor[0], wm.intrinsics, torch.eye(3, dtype=torch.float64)[None],
                                wm._encode_images)[1].shape == (1, wm.config.codec.latent_channels, 8, 8)


def test_batched_codec_calls_fall_back_where_they_would_change_bits(wm, threads, monkeypatch):
    """Where the probe finds the batched calls rounding differently (3+ threads on this project's
    machines; here forced), a step keeps its separate calls, and with them every bit."""
    threads(2)
    plain = _run(wm, reuse=True, fuse=True, together=False)[0]
    monkeypatch.setattr(WorldModel, "_codec_batching_exact", lambda self: False)
    fallback, first, open_loop = _run(wm, reuse=True, fuse=True, together=True)
    assert all(np.array_equal(a, b) for a, b in zip(plain, fallback))
    assert (first.decoder_calls, open_loop.encoder_calls, open_loop.decoder_calls) == (2, 4, 4)


def test_fast_paths_keep_every_bit_at_four_threads(wm, threads):
    """At 4 threads the codec's batches round unlike the separate calls on this project's machines (a
    measured case): whatever the probe finds, the fast paths give the plain ones' frames, and the step
    batches exactly when the probe says it may."""
    threads(4)
    plain = _run(wm, reuse=False, fuse=False, together=False)[0]
    fast, first, open_loop = _run(wm, reuse=True, fuse=True, together=True)
    for a, b in zip(plain, fast):
        assert np.array_equal(a, b), f"max |diff| {np.abs(a - b).max()} in uint8 units"
    batched = wm._codec_batching_exact()
    assert (first.decoder_calls, open_loop.encoder_calls) == ((1, 2) if batched else (2, 4))


def test_batched_codec_calls_compute_the_same_rows(wm):
    """Machine-independent: the batched calls return each row where the separate calls do (the rounding
    may differ; the rows may not be swapped or cut)."""
    gen = torch.Generator().manual_seed(3)
    c, (h, w) = wm.config.codec.latent_channels, wm.config.latent_size
    latents = torch.randn(1, c, 2, h, w, generator=gen)
    anchors = torch.randn(2, c, h, w, generator=gen)
    with torch.no_grad():
        apart, together = wm._decode_pair(latents, anchors, False), wm._decode_pair(latents, anchors, True)
        for a, b in zip(apart, together):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
        assert not torch.allclose(together[0][0, 0], together[1][0], atol=1e-2)  # distinct rows: a swap shows
        images = torch.rand(5, 3, *wm.config.resolution, generator=gen) * 2 - 1
        rows = torch.cat([wm._encode_images(images[:3]), wm._encode_images(images[3:])])
        assert torch.allclose(rows, wm._encode_images(images), atol=1e-4)


def test_the_probe_sees_a_batch_that_rounds_differently():
    """batching_is_exact compares the step's own calls batched and apart, and remembers per thread count."""
    codec = torch.nn.Linear(1, 1)  # stands for a codec: a module with parameters
    calls = []

    def encode(images):  # rows independent of the batch: exact
        calls.append(len(images))
        return images[:, :1, :2, :2] * 2

    def decode_pair(latents, anchors, together, nudge=0.0):
        frames = latents.transpose(1, 2) * 3 + (nudge if together else 0.0)
        return frames, anchors * 3

    args = ((8, 8), (4, 2, 2), encode)
    assert codec_batching.batching_is_exact(codec, *args, decode_pair, 2)
    assert calls == [3, 2, 5]  # the references' 3 rows, the anchors' 2, then all 5 at once
    assert codec_batching.batching_is_exact(codec, *args, decode_pair, 2)
    assert calls == [3, 2, 5]  # remembered for this thread count and resolution
    other = torch.nn.Linear(1, 1)
    assert not codec_batching.batching_is_exact(
        other, *args, lambda z, a, t: decode_pair(z, a, t, nudge=1e-6), 2)
    shifty = torch.nn.Linear(1, 1)
    assert not codec_batching.batching_is_exact(
        shifty, (8, 8), (4, 2, 2), lambda images: images[:, :1, :2, :2] * len(images), decode_pair, 2)
