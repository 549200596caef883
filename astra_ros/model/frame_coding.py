"""The codec's work around the transformer: a chunk's turned references in, its frames out.

A mixin of :class:`~astra_ros.model.world_model.WorldModel`: encoding the views a rotation reference
turns (``z + E(turn(x)) - E(x)``), decoding predicted latents relative to the newest observed frame
(anchor decoding or residual decoding, each frame from that frame turned to it), and, for a step, doing
both in as few codec calls as keep every bit (``batch_codec_calls``, :mod:`.codec_batching`).
"""

from __future__ import annotations

import numpy as np
import torch

from .codec_batching import batching_is_exact
from .view_rotation import is_identity, rotate_view


class FrameCoding:
    """Needs ``codec``, ``config``, ``anchor_decoder``, ``intrinsics``, ``reuse_views``,
    ``batch_codec_calls``, ``_anchor`` and ``_views`` (set up by WorldModel)."""

    def turned_views(self, anchors: torch.Tensor, rotations: torch.Tensor,
                     K: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``anchors`` (N, 3, H, W) in [-1, 1] as the camera would see them turned by ``rotations``
        (N, 3, 3), and their latents (N, C, h, w): the references of ``rotation_reference``."""
        turned = rotate_view(anchors, self.intrinsics if K is None else K, rotations)
        return turned, self._encode_images(turned)

    def _encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) -> latents (N, C, h, w)."""
        return self.codec.encode(images[None])[0].transpose(0, 1)

    @property
    def codec_calls_batched(self) -> bool:
        """Whether a step, at the current thread count, runs its codec work in fewer calls
        (``batch_codec_calls``, with turned references, where the batches keep every bit)."""
        return self._codec_batching_wanted and self._codec_batching_exact()

    @property
    def _codec_batching_wanted(self) -> bool:
        """Whether batching is asked for and a step has turned views to batch (before the probe's verdict)."""
        return bool(self.batch_codec_calls and self.config.rotation_reference)

    def _codec_batching_exact(self) -> bool:
        """Whether a step's batched codec calls round as its separate ones here (probed once per thread count)."""
        return batching_is_exact(self.codec, self.config.resolution,
                                 (self.config.codec.latent_channels, *self.config.latent_size),
                                 self._encode_images, self._decode_pair, self.config.frames_per_chunk)

    def _turned_reference(self, pixels: torch.Tensor, latents: torch.Tensor, relative: torch.Tensor,
                          anchor_rotations: torch.Tensor | None = None) -> torch.Tensor:
        """A chunk's delta references (B, C, n, h, w): the newest history frame, pixels (B or 1, 3, H, W)
        and latents (B or 1, C, h, w), turned by each frame's rotation ``relative`` to it (B, n, 3, 3).

        ``z + E(turn(x)) - E(x)``: for an observed frame exactly the turned view's latents (as in
        training, where every frame is real), for a predicted one its own latents moved by the turn, so
        the codec's round trip of its decoding adds nothing where the view does not turn. Without a turn
        (robot, keys, unknown actions) the frame's latents, as without a rotation reference.
        ``anchor_rotations`` (B, n, 3, 3): the newest observed frame's turned views that decoding the chunk
        will look up; those not kept yet are encoded in the same batch and kept for it (one encoder call
        instead of two).
        """
        b, n = relative.shape[:2]
        latents = latents.expand(b, -1, -1, -1)
        if is_identity(relative):
            return latents[:, :, None].expand(-1, -1, n, -1, -1)
        if self.reuse_views and self._anchor is not None and pixels is self._anchor[0]:
            # The newest observed frame: its encoding is known and decoding will turn it the same way.
            _, views, base = self._views.lookup(pixels, self.intrinsics, relative.flatten(0, 1), self._encode_images,
                                                base_rows=b)
            return latents[:, :, None] + views.unflatten(0, (b, n)).transpose(1, 2) - base[:, :, None]
        pixels = pixels.expand(b, -1, -1, -1)
        turned = rotate_view(pixels.repeat_interleave(n, dim=0), self.intrinsics, relative.flatten(0, 1))
        batch = [turned, pixels]
        anchor_rows = None
        if (anchor_rotations is not None and self._anchor is not None and not is_identity(anchor_rotations)
                and not self._views.holds(self._anchor[0], self.intrinsics, anchor_rotations.flatten(0, 1))):
            anchor_rows = anchor_rotations.flatten(0, 1)
            batch.append(rotate_view(self._anchor[0].expand(len(anchor_rows), -1, -1, -1), self.intrinsics, anchor_rows))
        coded = self._encode_images(torch.cat(batch))  # (B*n + B [+ B*n], C, h, w)
        if anchor_rows is not None:
            self._views.store(self._anchor[0], self.intrinsics, anchor_rows, batch[2], coded[b * n + b:])
        views = coded[:b * n].unflatten(0, (b, n)).transpose(1, 2)
        return latents[:, :, None] + views - coded[b * n:b * n + b][:, :, None]

    def _decode(self, latents: torch.Tensor, change_scale: float | None = None,
                rotations: torch.Tensor | None = None) -> np.ndarray:
        """Latents (B, C, T, h, w) -> uint8 frames (B, T, H, W, 3); see :meth:`_decode_float`."""
        return self._to_uint8(self._decode_float(latents, rotations, change_scale))

    @staticmethod
    def _to_uint8(frames: torch.Tensor) -> np.ndarray:
        return ((frames + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()

    def _decode_pair(self, latents: torch.Tensor, anchor_latents: torch.Tensor,
                     together: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, C, T, h, w) and their turned anchors' latents (B*T, C, h, w) decoded: (B, T, 3, H, W)
        and (B*T, 3, H, W); ``together`` in one decoder call (predicted rows first), else a call each."""
        if not together:
            return self.codec.decode(latents), self.codec.decode(anchor_latents.transpose(0, 1)[None])[0]
        predicted = latents.shape[0] * latents.shape[2]
        rows = torch.cat([latents.transpose(1, 2).flatten(0, 1), anchor_latents])
        decoded = self.codec.decode(rows.transpose(0, 1)[None])[0]
        return decoded[:predicted].unflatten(0, (latents.shape[0], latents.shape[2])), decoded[predicted:]

    def _decode_float(self, latents: torch.Tensor, rotations: torch.Tensor | None = None,
                      change_scale: float | None = None, together: bool = False) -> torch.Tensor:
        """Latents -> frames (B, T, 3, H, W) in [-1, 1], relative to the newest observed frame when the
        config says so: through the anchor decoder, or by residual decoding, which adds ``change_scale``
        (default: the config's) of the decoded change. ``rotations`` (B, T, 3, 3) of the frames relative
        to that frame (``rotation_reference``): each frame is decoded from that frame turned to it.
        ``together``: the frames and their turned anchors in one decoder call (a step's, where
        :meth:`_codec_batching_exact` says that keeps every bit; imagine's larger batches keep a call each)."""
        anchor = self._anchor
        if rotations is not None and anchor is not None and not is_identity(rotations):
            if self.reuse_views:
                turned, turned_latents, _ = self._views.lookup(anchor[0], self.intrinsics, rotations.flatten(0, 1),
                                                               self._encode_images)
            else:
                turned, turned_latents = self.turned_views(
                    anchor[0].expand(rotations.shape[0] * rotations.shape[1], -1, -1, -1), rotations.flatten(0, 1))
            frames, reconstructed = self._decode_pair(latents, turned_latents, together)
            anchor = (turned, reconstructed, turned_latents)
        else:
            frames = self.codec.decode(latents)  # (B, T, 3, H, W) in [-1, 1]
        if self.anchor_decoder is not None and anchor is not None:
            pixels, reconstructed, anchor_latents = anchor
            flat = latents.transpose(1, 2).flatten(0, 1)  # (B*T, C, h, w)
            frames = self.anchor_decoder(pixels, anchor_latents, reconstructed, flat,
                                         frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        elif self.config.residual_decoding and anchor is not None:
            pixels, reconstructed, _ = anchor
            if pixels.shape[0] > 1:  # one turned anchor per frame
                pixels, reconstructed = pixels.unflatten(0, frames.shape[:2]), reconstructed.unflatten(0, frames.shape[:2])
            scale = self.config.residual_change_scale if change_scale is None else change_scale
            frames = (pixels + scale * (frames - reconstructed)).clamp(-1, 1)
        return frames
