"""Block-causal attention masks and 3D rotary position embeddings (pure functions).

A token sequence is made of chunks. Each chunk is either a *history* chunk (clean or lightly
noised latents the model conditions on) or a *target* chunk (being denoised). The rule:

* a history chunk c attends to history chunks c' with c - window <= c' <= c;
* a target chunk c attends to history chunks c' with c - window <= c' < c, and to itself.

``window`` is ``max_history_chunks``: it is what a bounded KV cache can hold, so a dense
recomputation with this mask equals streaming with the cache, also after eviction.
"""

from __future__ import annotations

import torch


def block_causal_mask(
    chunk_ids: torch.Tensor, is_target: torch.Tensor, window: int | None = None
) -> torch.Tensor:
    """Boolean attention mask (L, L), True where query token i may attend to key token j.

    ``chunk_ids`` (L,) long: the chunk each token belongs to; ``is_target`` (L,) bool.
    ``window`` None means unbounded history.
    """
    q_c, k_c = chunk_ids[:, None], chunk_ids[None, :]
    q_t, k_t = is_target[:, None], is_target[None, :]
    lower = q_c - (window if window is not None else q_c.max().item() + 1)
    in_window = k_c >= lower
    history_keys = ~k_t & in_window & torch.where(q_t, k_c < q_c, k_c <= q_c)
    own_target = k_t & q_t & (k_c == q_c)
    return history_keys | own_target


def rope_angles(
    frame_pos: torch.Tensor, rows: int, cols: int, head_dim: int, theta: float
) -> torch.Tensor:
    """Rotary angles (L, head_dim // 2) for tokens laid out frame-major over (rows, cols).

    The head dimension is split as in Wan2.1: row and column parts get 2 * (head_dim // 6)
    channels each, frames the rest; each part rotates pairs of channels at frequencies
    theta ** (-2i / part_dim). Angles are computed in float64 from absolute positions, so a
    stream can run past any table length and relative positions stay exact. They are built on the
    CPU whatever device ``frame_pos`` is on (a few hundred numbers; some accelerators lack float64):
    the caller moves cos/sin to its activations.
    """
    hw_dim = 2 * (head_dim // 6)
    t_dim = head_dim - 2 * hw_dim

    def freqs(dim: int) -> torch.Tensor:
        return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)

    f = frame_pos.detach().to("cpu", torch.float64)[:, None] * freqs(t_dim)[None]  # (F, t_dim/2)
    r = torch.arange(rows, dtype=torch.float64)[:, None] * freqs(hw_dim)[None]  # (rows, hw_dim/2)
    c = torch.arange(cols, dtype=torch.float64)[:, None] * freqs(hw_dim)[None]  # (cols, hw_dim/2)
    n_f = frame_pos.numel()
    angles = torch.cat(
        [
            f[:, None, None].expand(n_f, rows, cols, -1),
            r[None, :, None].expand(n_f, rows, cols, -1),
            c[None, None, :].expand(n_f, rows, cols, -1),
        ],
        dim=-1,
    )
    return angles.reshape(n_f * rows * cols, head_dim // 2)


def rope_tables(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables (L, D) for :func:`apply_rope` from angles (L, D/2): each cosine twice, and the sine with
    the sign of the channel it lands on (``-sin`` on even channels, ``+sin`` on odd)."""
    cos, sin = angles.cos(), angles.sin()
    return cos.repeat_interleave(2, dim=-1), torch.stack([-sin, sin], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of x (B, H, L, D) by the angles of :func:`rope_tables` (L, D):
    ``(x_2i cos - x_2i+1 sin, x_2i sin + x_2i+1 cos)``. Written as ``x * cos + swap(x) * signed_sin``
    (four whole-width ops instead of eight on strided halves); IEEE ``a - b == a + (-b)`` and addition
    commutes, so the values are exactly those of the pairwise formula."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return x * cos + swapped * signed_sin
