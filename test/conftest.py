"""Test-wide environment: headless rendering and DDS that never leaves this machine."""

import os
import random

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
# Every process that may touch ROS 2 discovers only on localhost, on a domain of its own.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))


BROKEN_COMPILER_MESSAGE = "InvalidCxxCompiler: no working C++ compiler found"


@pytest.fixture
def broken_torch_compile(monkeypatch):
    """torch.compile as on a machine without a C++ compiler: compiling succeeds, the first call raises."""
    import torch

    def broken(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError(BROKEN_COMPILER_MESSAGE)
        return run

    monkeypatch.setattr(torch, "compile", broken)
    return BROKEN_COMPILER_MESSAGE
