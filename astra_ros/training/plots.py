"""Loss curves from the training CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of each value and the up to ``window - 1`` before it (same length as ``values``)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss(csv_path: Path, png_path: Path, smooth_points: int = 20, prediction: str = "velocity") -> Path:
    """Each trained phase's losses; a running mean over ``smooth_points`` logged rows is drawn on top,
    because the flow-matching loss of one batch swings with its sampled noise levels.
    ``prediction`` names what the world model's MSE is on (``AstraConfig.prediction``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(csv_path)))
    panels = [("codec", "codec: reconstruction + KL", ["reconstruction MSE"]),
              ("world", "world model: flow matching", [f"{prediction} MSE"]),
              ("decoder", "anchor decoder: pixel MSE", ["from predicted latents", "from real latents"])]
    logged = {r["phase"] for r in rows}
    # The phases the run has; before its first row, the codec and world panels say so.
    panels = [p for p in panels if p[0] in logged] or panels[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    axes = axes[0]
    for ax, (phase, title, part_labels) in zip(axes, panels):
        pts = [(int(r["step"]), float(r["loss"]), float(r["part_a"]), float(r["part_b"]))
               for r in rows if r["phase"] == phase]
        if pts:
            steps, loss, part_a, part_b = zip(*pts)
            ax.plot(steps, loss, label="total loss", alpha=0.35, linewidth=0.8)
            for label, part in zip(part_labels, (part_a, part_b)):
                if any(v == v for v in part):  # a part the run never logged (all NaN) gets no legend entry
                    ax.plot(steps, part, label=label, alpha=0.35, linewidth=0.8)
            window = min(smooth_points, len(loss) // 5)
            if window > 1:  # a run of under 10 rows has nothing to smooth
                ax.plot(steps, running_mean(loss, window), color="black",
                        label=f"total loss, mean of {window} rows")
            ax.set_yscale("log")
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no steps in this phase", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
