"""Figures, the dynamics tables and a markdown report for ``astra-eval`` (the image grid and the video are
in :mod:`astra_ros.eval.media`, re-exported here).

The input is the ``metrics.json`` dictionary of DESIGN.md section 4 (contract keys):
``horizon_s`` (list [s]); ``psnr`` and ``ssim`` with per-horizon lists for ``model``,
``copy_last`` and ``shuffled_actions``; ``action_sensitivity`` (fraction); ``rotation_error_deg``
and ``translation_dir_error_deg`` with ``model`` and ``ground_truth`` (per-horizon lists or
scalars; None/NaN where undefined); ``clips``; ``checkpoint``; ``bags``; and optionally
``skipped`` (counts by reason).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from astra_ros.eval.media import image_grid, write_video

__all__ = [
    "METRICS_PNG",
    "GRID_PNG",
    "VIDEO_MP4",
    "REPORT_MD",
    "plot_metrics",
    "image_grid",
    "write_video",
    "write_report",
    "write_metrics_json",
    "dynamics_lines",
    "dynamics_markdown",
    "plot_per_second",
    "PER_SECOND_PNG",
]

# Default file names inside the output directory.
METRICS_PNG = "metrics.png"
GRID_PNG = "grid.png"
VIDEO_MP4 = "video.mp4"
REPORT_MD = "report.md"
PER_SECOND_PNG = "per_second.png"

# (metrics key, subplot title, y-axis label, series keys) for each subplot vs horizon.
_PANELS = (
    ("psnr", "PSNR (higher is better)", "PSNR [dB]", ("model", "copy_last", "shuffled_actions", "codec_ceiling")),
    ("ssim", "SSIM (higher is better)", "SSIM [-]", ("model", "copy_last", "shuffled_actions", "codec_ceiling")),
    ("rotation_error_deg", "Rotation error (lower is better)", "rotation error [deg]", ("model", "ground_truth")),
    (
        "translation_dir_error_deg",
        "Translation direction error (lower is better)",
        "direction error [deg]",
        ("model", "ground_truth"),
    ),
)

_SERIES_LABELS = {
    "model": "model",
    "copy_last": "copy last frame",
    "shuffled_actions": "model, shuffled actions",
    "codec_ceiling": "codec ceiling (true future's latents)",
    "ground_truth": "real frames (estimator floor)",
}


def _as_float_array(values: Any, length: int) -> np.ndarray:
    """Per-horizon values as float64 ``[length]``: None -> NaN, a scalar is broadcast."""
    if values is None:
        return np.full(length, np.nan)
    if np.isscalar(values):
        return np.full(length, float(values))
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    if arr.size != length:
        raise ValueError(f"expected {length} values (one per horizon), got {arr.size}")
    return arr


def _nanmean(values: np.ndarray) -> float:
    """Mean over the finite values, NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def plot_metrics(metrics: Mapping[str, Any], path_png: str | os.PathLike) -> Path:
    """Plot each metric against the prediction horizon, one subplot per metric.

    Metrics that are missing from ``metrics`` are left out. The action sensitivity and
    the clip count go into the figure title.

    Args:
        metrics: the metrics dictionary (contract keys, see the module docstring).
        path_png: output PNG file.

    Returns:
        the path written.
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend and state alone.
    from matplotlib.figure import Figure

    horizon = np.asarray(metrics["horizon_s"], dtype=np.float64)
    panels = [p for p in _PANELS if isinstance(metrics.get(p[0]), Mapping)]
    if not panels:
        raise ValueError(f"no plottable metric found, expected some of {[p[0] for p in _PANELS]}")
    ncols = 2 if len(panels) > 1 else 1
    nrows = int(math.ceil(len(panels) / ncols))
    fig = Figure(figsize=(5.5 * ncols, 3.8 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (key, title, ylabel, series) in zip(axes.ravel(), panels):
        for name in series:
            if name not in metrics[key]:
                continue
            raw = metrics[key][name]
            values = _as_float_array(raw, horizon.size)
            # A scalar has no horizon dependence: draw it as a flat dashed line.
            style = "--" if np.isscalar(raw) else "-o"
            ax.plot(horizon, values, style, label=_SERIES_LABELS.get(name, name), markersize=4)
        ax.set_title(title)
        ax.set_xlabel("horizon [s]")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    sens = metrics.get("action_sensitivity")
    sens_txt = "n/a" if sens is None or not math.isfinite(float(sens)) else f"{float(sens):.2f}"
    fig.suptitle(f"{metrics.get('clips', '?')} clips, action sensitivity {sens_txt} (fraction of clips where true actions beat shuffled ones; 1 is best)")
    fig.tight_layout()
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _fmt(value: float, digits: int) -> str:
    """A number for the report, ``n/a`` for NaN/None."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def sensitivity_interval(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """A metrics row's ``action_sensitivity_ci95`` (lo, hi), or None when absent or undefined."""
    lo, hi = row.get("action_sensitivity_ci95") or (math.nan, math.nan)
    return (lo, hi) if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) else None


def _interval_cell(row: Mapping[str, Any]) -> str:
    interval = sensitivity_interval(row)
    return f" ({interval[0]:.2f}-{interval[1]:.2f})" if interval else ""


def _ci(bounds: Sequence[float] | None, sign: bool = True) -> str:
    if not bounds or bounds[0] is None or bounds[1] is None:
        return "(n/a)"
    return f"({bounds[0]:+.2f} to {bounds[1]:+.2f})" if sign else f"({bounds[0]:.2f}-{bounds[1]:.2f})"


def _signed(value: Any) -> str:
    """``+1.23``, or ``n/a`` for a missing or non-finite value."""
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):+.2f}"


def _gain(block: Mapping[str, Any]) -> str:
    """``+1.23 (+0.80 to +1.60)``: a gain over copy-last [dB] and its 95 % interval."""
    gain = _signed(block.get("gain"))
    return gain if gain == "n/a" else f"{gain} {_ci(block.get('gain_ci95'))}"


def _dynamics_groups(dynamics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [("all", dynamics["overall"])] + sorted((dynamics.get("per_scenario") or {}).items())


def _ceiling_note(pooled: Mapping[str, Any], changed: Mapping[str, Any]) -> str:
    """The codec ceiling's gains over copy-last, where the run had one."""
    if "ceiling_gain" not in pooled:
        return ""
    return f"  codec ceiling {_signed(pooled['ceiling_gain'])} (changed {_signed(changed.get('ceiling_gain'))})"


def dynamics_lines(dynamics: Mapping[str, Any]) -> list[str]:
    """Terminal lines of ``metrics["dynamics"]``: pooled and changed-pixel PSNR with the gain over copy-last and
    its 95 % interval, the sensitivity per scenario, and the pooled gain per second of the horizon."""
    lines = [f"pooled-MSE PSNR [dB] (changed pixels: > {dynamics['change_threshold']:g} grey levels from the last "
             "observed frame); gains over copy-last with 95 % bootstrap intervals over clips"]
    for name, row in _dynamics_groups(dynamics):
        pooled, changed = row["pooled_psnr"], row["changed_psnr"]
        lines.append(f"  {name:8} {row['clips']:4d} clips  pooled {_fmt(pooled['model'], 2)} vs "
                     f"{_fmt(pooled['copy_last'], 2)}: {_gain(pooled)}  changed {_fmt(changed['model'], 2)} vs "
                     f"{_fmt(changed['copy_last'], 2)}: {_gain(changed)}  sensitivity "
                     f"{_fmt(row['action_sensitivity'], 2)} {_ci(row.get('action_sensitivity_ci95'), sign=False)}"
                     + _ceiling_note(pooled, changed))
    seconds = dynamics["overall"]["per_second"]
    if len(seconds) > 1:
        for name, row in _dynamics_groups(dynamics):
            cells = [f"{s['second']} s {_gain(s['pooled_psnr'])}" for s in row["per_second"]]
            lines.append(f"  per second, pooled gain, {name}: " + "; ".join(cells))
    return lines


def plot_per_second(dynamics: Mapping[str, Any], path_png: str | os.PathLike) -> Path:
    """The pooled and changed-pixel gains over copy-last per second of the horizon, with their 95 % intervals,
    one line per scenario and one for all clips; dashed in the same colour the codec ceiling's, where the run
    had one (what exactly right latents would gain)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2)
    for ax, key, title in zip(axes, ("pooled_psnr", "changed_psnr"), ("pooled-MSE PSNR", "changed-pixel PSNR")):
        for name, row in _dynamics_groups(dynamics):
            seconds = [s["second"] for s in row["per_second"]]
            gains = np.array([np.nan if s[key]["gain"] is None else s[key]["gain"] for s in row["per_second"]], float)
            bounds = [s[key].get("gain_ci95") or (np.nan, np.nan) for s in row["per_second"]]
            low = gains - np.array([b[0] for b in bounds], float)
            high = np.array([b[1] for b in bounds], float) - gains
            line = ax.errorbar(seconds, gains, yerr=np.nan_to_num(np.stack([low, high])), marker="o", capsize=3,
                               label=f"{name} ({row['clips']} clips)", linewidth=2 if name == "all" else 1)
            if all(s[key].get("ceiling_gain") is not None for s in row["per_second"]):
                ax.plot(seconds, [s[key]["ceiling_gain"] for s in row["per_second"]], linestyle="--", marker=".",
                        color=line.lines[0].get_color(), linewidth=1)
        if any("ceiling_gain" in s[key] for _, row in _dynamics_groups(dynamics) for s in row["per_second"]):
            ax.plot([], [], linestyle="--", color="grey", label="dashed: codec ceiling")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{title}: gain over copy-last (95 %)")
        ax.set_xlabel("second of the horizon")
        ax.set_ylabel("gain [dB]")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def dynamics_markdown(dynamics: Mapping[str, Any]) -> list[str]:
    """Markdown tables of ``metrics["dynamics"]`` (see :func:`dynamics_lines`)."""
    lines = ["| set | clips | pooled PSNR model | copy last | gain (95 %) | changed-pixel PSNR model | copy last "
             "| gain (95 %) | changed pixels | action sensitivity (95 %) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in _dynamics_groups(dynamics):
        pooled, changed = row["pooled_psnr"], row["changed_psnr"]
        lines.append(f"| {name} | {row['clips']} | {_fmt(pooled['model'], 2)} | {_fmt(pooled['copy_last'], 2)} | "
                     f"{_gain(pooled)} | {_fmt(changed['model'], 2)} | {_fmt(changed['copy_last'], 2)} | "
                     f"{_gain(changed)} | {100 * changed['pixel_fraction']:.0f} % | "
                     f"{_fmt(row['action_sensitivity'], 2)} {_ci(row.get('action_sensitivity_ci95'), sign=False)} |")
    lines.append("")
    groups = _dynamics_groups(dynamics)
    if all("ceiling_gain" in row["pooled_psnr"] for _, row in groups):
        lines += ["Codec ceiling (the real future encoded and decoded as predictions are: what exactly right latents "
                  "would score), gain over copy-last [dB]:", "",
                  "| set | pooled: model | ceiling | changed pixels: model | ceiling |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {_signed(row['pooled_psnr']['gain'])} | {_signed(row['pooled_psnr']['ceiling_gain'])} | "
                  f"{_signed(row['changed_psnr']['gain'])} | {_signed(row['changed_psnr'].get('ceiling_gain'))} |"
                  for name, row in groups]
        lines.append("")
    lines += ["Gain over copy-last per second of the horizon [dB], pooled (changed pixels in brackets):", "",
              "| second | " + " | ".join(name for name, _ in groups) + " |",
              "|---" + "|---:" * len(groups) + "|"]
    for i, second in enumerate(dynamics["overall"]["per_second"]):
        cells = [f"{_gain(row['per_second'][i]['pooled_psnr'])} [{_gain(row['per_second'][i]['changed_psnr'])}]"
                 for _, row in groups]
        lines.append(f"| {second['second']} | " + " | ".join(cells) + " |")
    return lines


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars/arrays by Python types, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_metrics_json(metrics: Mapping[str, Any], path_json: str | os.PathLike) -> Path:
    """Write ``metrics.json`` as strict JSON: NaN/inf become null, numpy types become numbers."""
    path = Path(path_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")
    return path


def write_report(metrics: Mapping[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``report.md`` (and ``metrics.png``) into ``out_dir``.

    The report has a summary table (model vs copy-last vs shuffled actions, mean over
    the horizon), the action sensitivity, the camera-motion alignment errors, a
    per-horizon table, the skipped-clip counts, and links to every PNG and MP4 found in
    ``out_dir`` (write the grid and video before calling this to have them linked).

    Args:
        metrics: the metrics dictionary (contract keys, see the module docstring).
        out_dir: output directory, created if needed.

    Returns:
        the path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    horizon = np.asarray(metrics["horizon_s"], dtype=np.float64)
    n = horizon.size
    plot_metrics(metrics, out / METRICS_PNG)

    lines = ["# astra-eval report", ""]
    lines.append(f"- checkpoint: `{metrics.get('checkpoint', 'n/a')}`")
    bags = metrics.get("bags") or []
    lines.append(f"- bags ({len(bags)}): " + (", ".join(f"`{b}`" for b in bags) if bags else "none"))
    lines.append(f"- clips evaluated: {metrics.get('clips', 'n/a')}")
    lines.append("- horizons [s]: " + ", ".join(f"{h:g}" for h in horizon))
    skipped = metrics.get("skipped") or {}
    if skipped:
        lines.append("- skipped: " + ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())))
    lines.append("")

    # 1. Image quality, mean over the horizon.
    lines += ["## Image quality (mean over the horizon)", ""]
    lines += ["| metric | model | copy last | shuffled actions | codec ceiling |", "|---|---|---|---|---|"]
    for key, label, digits in (("psnr", "PSNR [dB]", 2), ("ssim", "SSIM", 4)):
        block = metrics.get(key) or {}
        cells = [_fmt(_nanmean(_as_float_array(block.get(s), n)), digits) for s in _PANELS[0][3]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("The codec ceiling is the real future encoded and decoded the way predictions are: what "
                 "predicting exactly the right latents would score.")
    shuffled_clips, clips = metrics.get("shuffled_clips"), metrics.get("clips")
    if shuffled_clips is not None and clips and shuffled_clips < clips:
        lines.append(f"The shuffled-actions column averages only the {shuffled_clips} of {clips} clips that have "
                     "another clip's actions to borrow, the other columns all of them: compare per modality below.")
    lines.append("")
    sens = metrics.get("action_sensitivity")
    bounds = sensitivity_interval(metrics)
    # The interval is over the clips that had shuffled actions to compare with.
    scored = shuffled_clips if shuffled_clips is not None else metrics.get("clips", "?")
    interval = f"; 95 % interval {bounds[0]:.2f}-{bounds[1]:.2f} over {scored} clips" if bounds else ""
    lines.append(
        f"**Action sensitivity: {_fmt(sens, 3)}** (fraction of clips whose prediction with the true actions "
        "has a strictly lower MSE than with shuffled actions; a model that ignores its actions scores 0 (ties) to about 0.5"
        f"{interval})."
    )
    lines.append("")
    per_modality = metrics.get("per_modality") or {}
    if per_modality:
        lines += ["## Per action modality (PSNR [dB], mean over the horizon)", "",
                  "| modality | clips | guidance s | model | copy last | shuffled actions | codec ceiling "
                  "| action sensitivity (95 %) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for modality, row in sorted(per_modality.items()):
            cells = [_fmt(row.get(f"psnr_{s}", math.nan), 2) for s in _PANELS[0][3]]
            lines.append(f"| {modality} | {row.get('clips', 'n/a')} | {_fmt(row.get('guidance_scale', math.nan), 2)} | "
                         + " | ".join(cells)
                         + f" | {_fmt(row.get('action_sensitivity', math.nan), 2)}{_interval_cell(row)} |")
        lines.append("")

    probe = metrics.get("one_shot_latent_mse")
    if probe:
        lines += ["## One-shot estimate of the next chunk (latent MSE)", "",
                  "The network's estimate of the first predicted chunk's latents from pure noise in one step "
                  "(its estimate of the mean future, given the real history and actions) against a copy of the "
                  "newest history latent. A ratio at or above 1 says the network has not learned to predict the "
                  "next frames, whatever its training loss, and no sampler setting will fix that. The still-cell "
                  "columns take only the latent cells that did not change, where copying is exact: the error "
                  "there is what the network adds to a still scene. The PSNR columns decode both the way "
                  "predictions are: with a lossy codec a lower latent MSE need not give a better frame.", "",
                  "| modality | clips | one-shot estimate | copy last | ratio | still cells | one-shot on still cells "
                  "| decoded PSNR [dB]: one-shot | copy last |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        rows = [("all", probe)] + [(name, row["one_shot_latent_mse"]) for name, row in sorted(per_modality.items())
                                   if row.get("one_shot_latent_mse")]
        for name, row in rows:
            lines.append(f"| {name} | {row['clips']} | {_fmt(row['model'], 4)} | {_fmt(row['copy_last'], 4)} | "
                         f"{_fmt(row['ratio'], 3)} | {100 * row['still_cells']:.0f} % | "
                         f"{_fmt(row['model_on_still_cells'], 4)} | {_fmt(row.get('model_psnr', math.nan), 2)} | "
                         f"{_fmt(row.get('copy_last_psnr', math.nan), 2)} |")
        lines.append("")

    dynamics = metrics.get("dynamics")
    if dynamics:
        lines += ["## Dynamics: pooled and changed-pixel PSNR (95 % intervals)", "",
                  "PSNR of the squared error pooled over every frame of every clip (no frame's cap decides it), "
                  f"and over the pixels where the real future differs from the last observed frame by more than "
                  f"{dynamics['change_threshold']:g} grey levels in some channel (where copying is wrong); "
                  f"intervals: {dynamics['bootstrap']['resamples']} bootstrap resamples of the clips "
                  "(sensitivity: Wilson).", ""]
        lines += dynamics_markdown(dynamics) + [""]
        if len(dynamics["overall"]["per_second"]) > 1:  # linked under "Figures" below
            plot_per_second(dynamics, out / PER_SECOND_PNG)
    if not (dynamics and len(dynamics["overall"]["per_second"]) > 1):
        # An earlier, longer run's plot in the same folder would be linked as this run's.
        (out / PER_SECOND_PNG).unlink(missing_ok=True)

    # 2. Camera-motion alignment.
    lines += ["## Camera-motion alignment (mean over the horizon)", ""]
    if metrics.get("motion_estimator"):
        lines += [f"Motion estimator: `{metrics['motion_estimator']}` correspondences, essential matrix.", ""]
    lines += ["| error | model frames | real frames (estimator floor) |", "|---|---|---|"]
    alignment = (
        ("rotation_error_deg", "rotation [deg]"),
        ("translation_dir_error_deg", "translation direction [deg]"),
    )
    for key, label in alignment:
        block = metrics.get(key) or {}
        cells = [_fmt(_nanmean(_as_float_array(block.get(s), n)), 2) for s in ("model", "ground_truth")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    rows = [("all", metrics.get("rotation_paired") or {})]
    rows += [(name, row.get("rotation_paired") or {}) for name, row in sorted(per_modality.items())]
    rows = [(name, paired) for name, paired in rows if paired.get("model_defined") is not None]
    if rows:
        lines += ["On the same (clip, horizon) pairs only, where the estimator worked on both predicted and real "
                  "frames (the table above averages each over the pairs where its own estimate worked):", "",
                  "| modality | pairs | rotation, predicted [deg] | rotation, real [deg] | ratio "
                  "| no rotation (true angle) [deg] | estimate found: predicted | estimate found: real |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, paired in rows:
            lines.append(f"| {name} | {paired.get('pairs', 0)} | {_fmt(paired.get('model_deg'), 2)} | "
                         f"{_fmt(paired.get('ground_truth_deg'), 2)} | {_fmt(paired.get('ratio'), 2)} | "
                         f"{_fmt(paired.get('still_deg'), 2)} | "
                         f"{100 * paired['model_defined']:.0f} % | {100 * paired['ground_truth_defined']:.0f} % |")
        lines.append("")
        ceiling = rows[0][1].get("codec_ceiling") or {}
        if ceiling.get("pairs"):
            lines += [f"The codec ceiling's frames (the real future through the codec and the decoding), on the "
                      f"{ceiling['pairs']} pairs where they and the real frames gave estimates: "
                      f"{_fmt(ceiling['deg'], 2)} deg against the real frames' {_fmt(ceiling['ground_truth_deg'], 2)} "
                      f"and a still camera's {_fmt(ceiling['still_deg'], 2)}: how much of a turn any prediction "
                      "decoded this way could show.", ""]

    # 3. Per-horizon numbers.
    lines += ["## Per horizon", ""]
    cols = [
        ("psnr", "model", "PSNR model", 2),
        ("psnr", "copy_last", "PSNR copy", 2),
        ("psnr", "shuffled_actions", "PSNR shuffled", 2),
        ("ssim", "model", "SSIM model", 4),
        ("ssim", "copy_last", "SSIM copy", 4),
        ("ssim", "shuffled_actions", "SSIM shuffled", 4),
        ("rotation_error_deg", "model", "rot. err. [deg]", 2),
        ("translation_dir_error_deg", "model", "transl. dir. err. [deg]", 2),
    ]
    lines.append("| horizon [s] | " + " | ".join(c[2] for c in cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    values = {(k, s): _as_float_array((metrics.get(k) or {}).get(s), n) for k, s, _, _ in cols}
    for i, h in enumerate(horizon):
        cells = [_fmt(values[(k, s)][i], d) for k, s, _, d in cols]
        lines.append(f"| {h:g} | " + " | ".join(cells) + " |")
    lines.append("")

    # 4. Figures and videos present in the directory.
    lines += ["## Figures", ""]
    for png in sorted(out.glob("*.png")):
        lines.append(f"![{png.stem}]({png.name})")
        lines.append("")
    for mp4 in sorted(out.glob("*.mp4")):
        lines.append(f"- video: [{mp4.name}]({mp4.name})")
    path = out / REPORT_MD
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
