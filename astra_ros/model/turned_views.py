"""Encoded turned views of one frame, kept so that a step encodes each of them once.

With ``rotation_reference`` a step after ``observe`` turns the newest observed frame by each predicted
frame's rotation twice: for the chunk's delta references and for its anchor decoding. Both are the
same images. :class:`TurnedViewCache` holds, for one base frame (the tensor object itself, so a new
frame never hits an old entry), its turned views with their encodings by exact rotation. In open
loop (the references turn a predicted frame) a step encodes its decoding's views of the observed frame
in the batch of its references and stores them here (:meth:`TurnedViewCache.store`).

Bit for bit: the CPU convolutions round a frame differently in a batch of one than in a larger
batch, and an observed frame's encoding (from a strided tensor) differently again. So a request is
served from the cache only when every row of it is there from a batch of the same kind (one row or
several); any other request is computed whole, exactly the batch the uncached code encodes; and the
cache lives for one call (``step``, ``imagine``), whose batches are small: rows of a large batch (24
frames) can round differently again. The outputs are then the uncached code's, bit for bit (tested).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

from .view_rotation import rotate_view

Encode = Callable[[torch.Tensor], torch.Tensor]  # frames (N, 3, H, W) -> latents (N, C, h, w)

BASE = b"base"  # key of the base frame's own (unturned) encoding


class TurnedViewCache:
    """Turned views of one base frame (1, 3, H, W) and their latents, by rotation; at most ``max_rows``."""

    def __init__(self, max_rows: int = 64) -> None:
        self.max_rows = max_rows
        self.base: torch.Tensor | None = None
        # (key, encoded in a batch of >= 2) -> (turned image (3, H, W) or None for the base, latents (C, h, w))
        self._rows: OrderedDict[tuple[bytes, bool], tuple[torch.Tensor | None, torch.Tensor]] = OrderedDict()

    def clear(self) -> None:
        self.base = None
        self._rows.clear()

    def set_base(self, base: torch.Tensor) -> None:
        """Start over for frame ``base`` (1, 3, H, W)."""
        self.clear()
        self.base = base

    @staticmethod
    def _keys(K: torch.Tensor, rotations: torch.Tensor) -> list[bytes]:
        prefix = K.to(torch.float64).cpu().numpy().tobytes()
        return [prefix + r.to(torch.float64).cpu().numpy().tobytes() for r in rotations]

    def _has(self, keys: list[bytes], grouped: bool) -> bool:
        return all((key, grouped) in self._rows for key in keys)

    def _keep(self, keys: list[bytes], grouped: bool, images, latents) -> None:
        """Rows in, newest last; the oldest out beyond ``max_rows`` (never a row just kept: a request
        has at most ``max_rows`` rows)."""
        for key, image, z in zip(keys, images, latents):
            self._rows[(key, grouped)] = (image, z)
            self._rows.move_to_end((key, grouped))
        while len(self._rows) > self.max_rows:
            self._rows.popitem(last=False)

    def holds(self, base: torch.Tensor, K: torch.Tensor, rotations: torch.Tensor) -> bool:
        """Whether a request of these rows (two or more) would be served without encoding."""
        return base is self.base and len(rotations) >= 2 and self._has(self._keys(K, rotations), True)

    def store(self, base: torch.Tensor, K: torch.Tensor, rotations: torch.Tensor, turned: torch.Tensor,
              latents: torch.Tensor) -> None:
        """Keep ``base`` turned by ``rotations`` (N, 3, 3), ``turned`` (N, 3, H, W), and their latents
        (N, C, h, w) that the caller encoded as rows of one larger batch (several rows: the kind a
        request of two or more rows is served from), so that a later :meth:`lookup` encodes none of them."""
        if base is not self.base:
            self.set_base(base)
        self._keep(self._keys(K, rotations), True, turned, latents)

    def lookup(self, base: torch.Tensor, K: torch.Tensor, rotations: torch.Tensor, encode: Encode,
               base_rows: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``base`` turned by each of ``rotations`` (N, 3, 3) with intrinsics ``K`` and their latents,
        (N, 3, H, W) and (N, C, h, w), plus the base's own latents (1, C, h, w) when ``base_rows`` > 0
        (else None): what encoding the N views and ``base_rows`` copies of the base in one batch gives.
        A request whose rows were all seen before (same base, K, rotation, kind of batch) is served from
        them; any other is computed whole, as that one batch."""
        if base is not self.base:
            self.set_base(base)
        keys = self._keys(K, rotations) + [BASE] * base_rows
        grouped = len(keys) >= 2
        if len(keys) > self.max_rows:  # a planner's large batch: nothing to gain, only copies
            turned = rotate_view(base.expand(len(rotations), -1, -1, -1), K, rotations)
            latents = encode(torch.cat([turned, base.expand(base_rows, -1, -1, -1)]))
            return turned, latents[:len(rotations)], latents[len(rotations):][:1] if base_rows else None
        if not self._has(keys, grouped):
            turned = rotate_view(base.expand(len(rotations), -1, -1, -1), K, rotations)
            latents = encode(torch.cat([turned, base.expand(base_rows, -1, -1, -1)]))
            self._keep(keys, grouped, list(turned) + [None] * base_rows, latents)
        rows = [self._rows[(k, grouped)] for k in keys]
        n = len(rotations)
        turned = torch.stack([t for t, _ in rows[:n]])
        # Laid out as the codec returns them, (C, N, h, w) storage: the decoder's convolutions round a
        # strided input differently from a contiguous one.
        latents = torch.stack([z for _, z in rows[:n]], dim=1).transpose(0, 1)
        base_latents = rows[n][1][None] if base_rows else None
        return turned, latents, base_latents
