"""The allocator setting that keeps a step's freed activations for the next one (model/allocator.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Ten 8 MB tensors alive at once, then freed, five times over: a step's pattern of activations. Minor
# page faults are counted (not timed): a count does not depend on the machine's load.
CHILD = r"""
import json, resource, sys
import torch
from astra_ros.model import allocator
applied = allocator.keep_freed_memory() if sys.argv[1] == "keep" else None
if sys.argv[1] == "model":
    from astra_ros.model import WorldModel
    from astra_ros.model.config import preset
    WorldModel(preset("tiny"))
    applied = allocator.keep_freed_memory()
def burst():
    return [torch.ones(2 << 20) for _ in range(10)]
burst()  # the first burst maps its memory in any case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    burst()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _child(mode: str, **env) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activations_are_not_faulted_in_again():
    plain = _child("plain")
    kept = _child("keep")
    assert kept["applied"] is True
    # 5 bursts x 80 MB is 100,000 pages faulted in again by default; kept, almost none.
    assert plain["faults"] > 50_000
    assert kept["faults"] < plain["faults"] / 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_first_world_model_applies_it_unless_switched_off():
    assert _child("model")["applied"] is True
    off = _child("model", ASTRA_KEEP_FREED_MEMORY="0")
    assert off["applied"] is False and off["faults"] > 50_000
