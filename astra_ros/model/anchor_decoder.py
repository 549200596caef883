"""Anchor decoding: a future frame from its latents *and* the newest observed frame.

The latent codec keeps 16 numbers per 8x8 pixels: enough to say where things went, not enough to
redraw the texture that moved. Residual decoding (``x_last + D(z) - D(z_last)``) keeps the last
frame's detail only where nothing moved. This decoder keeps it where things moved too: it reads
the motion between the anchor's latents and the predicted ones (a correlation over shifts at
the latent resolution, refined coarse to fine on image features), warps the anchor frame with
that flow together with the anchor's own decoding, and adds the decoded change the move does not
explain (new content at the border, disocclusions): residual decoding along the flow. Flow and
correction heads start at zero and the change at full weight, so an untrained decoder is exactly
residual decoding.

Shapes: anchor frames (N, 3, H, W) in [-1, 1], latents (N, C, h, w) with H = h * spatial_factor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def correlation(a: torch.Tensor, b: torch.Tensor, radius: int) -> torch.Tensor:
    """Cost volume: for every shift d in [-radius, radius]^2 the channel mean of ``a[p] * b[p + d]``
    ((2r+1)^2 channels, zero outside ``b``). ``a``, ``b``: (N, C, h, w)."""
    n, c, h, w = a.shape
    k = 2 * radius + 1
    shifted = F.unfold(b, kernel_size=k, padding=radius).view(n, c, k * k, h, w)
    return (a.unsqueeze(2) * shifted).mean(dim=1)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out[p] = image[p + flow[p]]`` (bilinear, edges repeated). ``flow`` (N, 2, H, W)
    in pixels of ``image``, x then y."""
    n, _, h, w = image.shape
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device)
    # Normalised coordinates of pixel centres (align_corners=False): (2p + 1) / size - 1.
    gx = (2 * (xs[None, None, :] + flow[:, 0]) + 1) / w - 1
    gy = (2 * (ys[None, :, None] + flow[:, 1]) + 1) / h - 1
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GELU())


class AnchorDecoder(nn.Module):
    """``forward(anchor, anchor_latents, anchor_coarse, latents, coarse) -> frames``; ``coarse`` and
    ``anchor_coarse`` are the plain decodings of ``latents`` and ``anchor_latents`` (the codec's own
    decoder, run by the caller)."""

    def __init__(self, latent_channels: int, spatial_factor: int, width: int = 32, search_radius: int = 3) -> None:
        super().__init__()
        levels = int(math.log2(spatial_factor))
        if 2 ** levels != spatial_factor or levels < 1:
            raise ValueError(f"anchor decoding needs a power-of-two spatial factor >= 2, got {spatial_factor}")
        self.levels = levels
        self.search_radius = search_radius
        # Feature widths from full resolution (level 0) to the latent resolution (level ``levels``).
        widths = [max(8, width * (1 + level) // 4) for level in range(levels + 1)]
        self.widths = widths
        # One image pyramid for the anchor and the coarse target (same weights, so their features compare).
        self.pyramid = nn.ModuleList([_conv(3, widths[0])] + [
            _conv(widths[level - 1], widths[level], stride=2) for level in range(1, levels + 1)])
        search = (2 * search_radius + 1) ** 2
        top = widths[-1]
        self.coarse = nn.Sequential(
            _conv(2 * latent_channels + 2 * search + 2 * top, 2 * top), _conv(2 * top, 2 * top), _conv(2 * top, top))
        self.coarse_flow = nn.Conv2d(top, 2, 3, padding=1)
        # Levels between: upsampled hidden state, warped anchor features, target features, a local
        # correlation. Full resolution only blends (the flow is refined down to half resolution).
        self.refine = nn.ModuleList()
        self.refine_flow = nn.ModuleList()
        for level in range(levels - 1, 0, -1):
            c = widths[level]
            self.refine.append(nn.Sequential(_conv(widths[level + 1] + 2 * c + 9, 2 * c), _conv(2 * c, c)))
            self.refine_flow.append(nn.Conv2d(c, 2, 3, padding=1))
        # Full resolution: blend weight of the warped anchor against the coarse decoding, and a correction.
        c0 = widths[0]
        self.fine = _conv(widths[1] + 9, c0)
        self.blend = nn.Conv2d(c0, 1, 3, padding=1)
        self.correction = nn.Conv2d(c0, 3, 3, padding=1)
        self.reset_heads()

    def reset_heads(self) -> None:
        """Zero flow and correction, full weight on the decoded change: the decoder starts as residual
        decoding, ``anchor + coarse - anchor_coarse``."""
        for head in [self.coarse_flow, *self.refine_flow, self.correction, self.blend]:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        nn.init.constant_(self.blend.bias, 8.0)  # sigmoid(8) = 0.9997

    def activation_floats(self, height: int, width: int) -> int:
        """Rough count of the floats one decoded frame's activations hold at once (for batch sizing):
        both image pyramids, the cost volumes and the full-resolution inputs of the last layers,
        each of the finer levels counted twice for its concatenated inputs."""
        pixels = height * width
        pyramid = sum(2 * c * pixels // 4 ** level for level, c in enumerate(self.widths))
        search = (2 * self.search_radius + 1) ** 2
        latent_cells = pixels // 4 ** self.levels
        coarse = latent_cells * (2 * search + 8 * self.widths[-1])
        refine = sum(2 * (3 * self.widths[level] + 9 + self.widths[level + 1]) * pixels // 4 ** level
                     for level in range(1, self.levels))
        fine = pixels * (2 * (self.widths[1] + 9) + self.widths[0] + 18)
        return pyramid + coarse + refine + fine

    def _features(self, image: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        x = image
        for layer in self.pyramid:
            x = layer(x)
            feats.append(x)
        return feats  # full res first

    def forward(self, anchor: torch.Tensor, anchor_latents: torch.Tensor, anchor_coarse: torch.Tensor,
                latents: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        n = latents.shape[0]
        if anchor.shape[0] != n:  # one anchor for every predicted frame
            anchor = anchor.expand(n, -1, -1, -1)
            anchor_latents = anchor_latents.expand(n, -1, -1, -1)
            anchor_coarse = anchor_coarse.expand(n, -1, -1, -1)
        both = self._features(torch.cat([anchor, coarse], dim=0))
        fa = [f[:n] for f in both]
        ft = [f[n:] for f in both]
        r = self.search_radius
        x = torch.cat([anchor_latents, latents, correlation(latents, anchor_latents, r),
                       correlation(ft[-1], fa[-1], r), fa[-1], ft[-1]], dim=1)
        hidden = self.coarse(x)
        scale = 2 ** self.levels  # pixels per cell at this level; flow is kept in full-resolution pixels
        flow = self.coarse_flow(hidden) * scale
        for i, level in enumerate(range(self.levels - 1, 0, -1)):
            flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=False)
            hidden = F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=False)
            scale = 2 ** level
            warped = warp(fa[level], flow / scale)
            x = torch.cat([hidden, warped, ft[level], correlation(ft[level], warped, 1)], dim=1)
            hidden = self.refine[i](x)
            flow = flow + self.refine_flow[i](hidden) * scale
        flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=False)
        hidden = F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=False)
        moved = warp(torch.cat([anchor, anchor_coarse], dim=1), flow)
        moved, moved_coarse = moved[:, :3], moved[:, 3:]
        x = self.fine(torch.cat([hidden, moved, coarse, anchor], dim=1))
        # Residual decoding along the flow: the anchor's pixels moved where the latents say, plus
        # the decoded change that the move does not explain (weighted; 1 where the flow is zero).
        weight = torch.sigmoid(self.blend(x))
        out = moved + weight * (coarse - moved_coarse) + self.correction(x)
        return out.clamp(-1, 1)
