"""Opt-in compilation of the convolution stacks (astra_ros.model.compiled): it keeps the weights, its frames
stay within a grey level or two of the eager ones, and a failure leaves the model eager and working."""

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from astra_ros.model import AstraConfig, WorldModel, preset
from astra_ros.model.compiled import GREY_LEVEL_TOLERANCE, CompileFailed, compilable_modules, compile_convolutions
from astra_ros.model.step_profile import StepRecorder


def _tiny(seed: int = 0) -> WorldModel:
    """The tiny preset with an anchor decoder, so all three stacks are there; fixed random weights."""
    config = AstraConfig.from_dict({**preset("tiny").to_dict(), "residual_decoding": True, "anchor_decoder_width": 8})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WorldModel(config).eval()


def _frames(model: WorldModel) -> np.ndarray:
    """A stream's frames (uint8): start, a step, an imagine of two candidates."""
    rng = np.random.default_rng(5)
    n = model.frames_per_chunk
    video = rng.integers(0, 256, (2 * n, *model.resolution, 3), dtype=np.uint8)
    actions = (rng.normal(size=(4 * n, 6)) * 0.2).astype(np.float32)
    model.start(video, actions[:2 * n], modality="twist", seed=3)
    stepped = model.step(actions[2 * n:3 * n], seed=3)
    imagined = model.imagine(np.stack([actions[2 * n:], actions[2 * n:] * -1]), seed=3, shared_noise=True)
    model.reset()
    return np.concatenate([stepped.reshape(-1, *model.resolution, 3), imagined.reshape(-1, *model.resolution, 3)])


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_stacks_keep_the_weights_and_the_frames():
    threads_before = torch.get_num_threads()
    eager, model = _tiny(), _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Compiled in the middle of a stream: the warm-up runs on a stream of its own, this one goes on as it was.
    rng = np.random.default_rng(9)
    video = rng.integers(0, 256, (4, *model.resolution, 3), dtype=np.uint8)
    actions = (rng.normal(size=(6, 6)) * 0.2).astype(np.float32)
    for m in (eager, model):
        m.start(video, actions[:4], modality="twist", seed=1)
    report = compile_convolutions(model, context_frames=4, threads=1)
    assert torch.get_num_threads() == threads_before
    assert np.abs(model.step(actions[4:], seed=2).astype(int) - eager.step(actions[4:], seed=2).astype(int)).max() <= 1
    for m in (eager, model):
        m.reset()
    assert report.modules == ("codec.encoder", "codec.decoder", "anchor_decoder")
    assert report.seconds > 0 and report.max_grey_level_difference <= GREY_LEVEL_TOLERANCE
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())
    for module in compilable_modules(model).values():
        assert "forward" in vars(module)  # compiled in place, over the class's forward
    a, b = _frames(eager), _frames(model)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= GREY_LEVEL_TOLERANCE
    assert (a != b).mean() < 0.01
    # astra-bench's stage recorder wraps the anchor decoder while it records, and hands the compiled forward back.
    compiled_forward = vars(model.anchor_decoder)["forward"]
    with StepRecorder(model).recording():
        _frames(model)
    assert vars(model.anchor_decoder)["forward"] is compiled_forward
    with pytest.raises(CompileFailed, match="compiled already"):
        compile_convolutions(model)


def test_a_compiler_that_fails_leaves_the_model_eager(broken_torch_compile):
    eager, model = _tiny(), _tiny()
    with pytest.raises(CompileFailed, match="torch.compile failed here .RuntimeError: InvalidCxxCompiler.*runs uncompiled"):
        compile_convolutions(model)
    assert not any("forward" in vars(m) for m in compilable_modules(model).values())
    np.testing.assert_array_equal(_frames(model), _frames(eager))


def test_compiled_frames_that_disagree_are_refused(monkeypatch):
    model = _tiny()

    def off_by_a_lot(fn, **kwargs):  # a kernel bug: every decoded frame brighter by a tenth of the range
        def run(*args, **kw):
            out = fn(*args, **kw)
            return out + 0.2 if fn.__self__ is model.codec.vae.decoder else out
        return run

    monkeypatch.setattr(torch, "compile", off_by_a_lot)
    with pytest.raises(CompileFailed, match=r"differ from the eager ones by up to \d+ grey levels"):
        compile_convolutions(model)
    assert not any("forward" in vars(m) for m in compilable_modules(model).values())


def test_only_the_autoencoder_codec_is_offered():
    wan = SimpleNamespace(config=SimpleNamespace(codec=SimpleNamespace(kind="wan")))  # the check reads the kind first
    with pytest.raises(CompileFailed, match="autoencoder_kl codec, not 'wan'"):
        compilable_modules(wan)


def test_shapes_the_warm_up_never_met_run_eagerly():
    """A new shape would compile inside whichever thread meets it (minutes, unchecked): it runs eagerly."""
    from astra_ros.model.compiled import _WarmedForward

    calls = []
    forward = _WarmedForward(lambda x: calls.append(("eager", tuple(x.shape))), lambda x: calls.append(("compiled", tuple(x.shape))))
    forward(torch.zeros(2, 3))  # the warm-up
    forward.learning = False
    forward(torch.zeros(2, 3))
    forward(torch.zeros(5, 3))
    assert calls == [("compiled", (2, 3)), ("compiled", (2, 3)), ("eager", (5, 3))]
