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


# 5 bursts x 80 MB touch 100,000 pages of 4 kB. By default they are faulted in again (102,150 faults here; some
# runs on the same machine counted 22,400, the kernel handling part of the memory otherwise), with the setting
# almost none (2,048: one tensor's pages). So each is bounded against the pages touched, not against the other.
PAGES_TOUCHED = 100_000
DEFAULT_FAULTS_AT_LEAST = PAGES_TOUCHED // 10
KEPT_FAULTS_AT_MOST = PAGES_TOUCHED // 20


def _child(mode: str, **env) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activations_are_not_faulted_in_again():
    plain = _child("plain")
    kept = _child("keep")
    assert kept["applied"] is True
    # By default the freed bursts are faulted in again; kept, almost none are.
    assert plain["faults"] > DEFAULT_FAULTS_AT_LEAST, plain
    assert kept["faults"] < KEPT_FAULTS_AT_MOST, (kept, plain)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_first_world_model_applies_it_unless_switched_off():
    assert _child("model")["applied"] is True
    off = _child("model", ASTRA_KEEP_FREED_MEMORY="0")
    assert off["applied"] is False and off["faults"] > DEFAULT_FAULTS_AT_LEAST, off
