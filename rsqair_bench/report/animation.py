"""Animated rollouts: one GIF per model and split, data above, model below, one GIF frame per time step.

Why GIFs beside the PNG strip: motion (a ball that bounces too early, an object box that
jumps to another ball, a sampled frame that drifts) is what a relational model gets right or
wrong, and it is easier to see moving than in a strip of stills. R-NEM, G-SWM and STOVE
readers expect them.

Input: the `rollout_<data>_<split>.npz` files evaluation leaves in each job directory
(`truth` [T,H,W], `frames` [T,H,W], `boxes` [T,K,4], `pres` [T,K], `ids` [T,K], `n_observed`);
the first seed that has one stands for its model. Boxes are coloured by object id, so an
identity switch shows as a colour change; frames from `n_observed` on are sampled from the
propagation prior and framed in red with "sampled" in the title. Written with matplotlib's
Pillow writer (no ffmpeg needed), kept under MAX_BYTES each.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from rsqair_bench.core.io import atomic_path, read_regular_file
from rsqair_bench.report.textfmt import file_name_part

log = logging.getLogger(__name__)

MAX_BYTES = 2 * 1024 * 1024
FPS = 2
HOLD_LAST = 2  # extra copies of the last frame, so the sampled frame stays up a moment
DPI_STEPS = (100, 70, 50, 30)  # tried in turn until the file fits MAX_BYTES


def _load(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(io.BytesIO(read_regular_file(path))) as z:  # checked and read in one open; no pickle
            data = {key: np.asarray(z[key]) for key in z.files}
        for key in ("frames", "boxes", "pres", "n_observed"):
            if key not in data:
                raise KeyError(key)
        return data
    except (OSError, KeyError, ValueError) as err:
        log.warning("%s: skipped rollout GIF (%s)", path, err)
        return None


def _draw(data: dict[str, np.ndarray], title: str, out: Path, dpi: int) -> None:
    """Render the animation to `out` (its suffix, .gif, tells Pillow the format)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.patches import Rectangle

    frames, boxes, pres = data["frames"], data["boxes"], data["pres"]
    ids = data["ids"] if "ids" in data else np.broadcast_to(np.arange(pres.shape[1]), pres.shape)
    truth = data.get("truth")
    n_obs = int(data["n_observed"])
    steps = frames.shape[0]
    panels = [("data", truth), ("model", frames)] if truth is not None else [("model", frames)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(2.2, 2.2 * len(panels) + 0.4), squeeze=False)
    colors = plt.get_cmap("tab10")
    images = []
    for ax, (name, seq) in zip(axes[:, 0], panels):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, fontsize=8)
        images.append(ax.imshow(seq[0], cmap="gray", vmin=0.0, vmax=1.0))
    model_ax = axes[-1, 0]
    patches: list[Any] = []
    heading = fig.suptitle(title, fontsize=7)

    def update(t: int) -> list[Any]:
        for image, (_, seq) in zip(images, panels):
            image.set_data(seq[min(t, seq.shape[0] - 1)])
        for patch in patches:
            patch.remove()
        patches.clear()
        for k in range(boxes.shape[1]):
            if pres[t, k] > 0.5:
                x0, y0, x1, y1 = boxes[t, k]
                color = colors(int(ids[t, k]) % 10)  # one colour per object identity across frames
                patches.append(
                    model_ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.2))
                )
        sampled = t >= n_obs
        for spine in model_ax.spines.values():
            spine.set_edgecolor("red" if sampled else "black")
            spine.set_linewidth(2.0 if sampled else 0.8)
        heading.set_text(f"{title}\nt={t + 1}/{steps}" + (" (sampled from prior)" if sampled else " (inferred)"))
        return images + patches

    order = list(range(steps)) + [steps - 1] * HOLD_LAST
    anim = FuncAnimation(fig, update, frames=order, blit=False)
    try:
        anim.save(str(out), writer=PillowWriter(fps=FPS), dpi=dpi)
    finally:
        plt.close(fig)


def write_gif(npz: Path, title: str, path: Path) -> Path | None:
    """One rollout file as a GIF at `path`, atomically; None when the file is unusable or too big."""
    data = _load(npz)
    if data is None:
        return None
    try:
        with atomic_path(path, suffix=".gif") as tmp:  # suffix: the GIF writer picks its format from it
            for dpi in DPI_STEPS:
                _draw(data, title, tmp, dpi)
                if tmp.stat().st_size <= MAX_BYTES:
                    break
            else:
                raise _TooBig
    except _TooBig:
        log.warning("%s: GIF over %d bytes even at %d dpi; not written", path, MAX_BYTES, DPI_STEPS[-1])
        return None
    return path


class _TooBig(Exception):
    """No resolution brought the GIF under MAX_BYTES: leave the atomic write without renaming."""


def write_rollout_gifs(runs: list[dict[str, Any]], figures: Path) -> list[Path]:
    """figures/rollout_<model>_<data>_<split>.gif for each model and split with a rollout file."""
    chosen: dict[tuple[str, str], tuple[str, Path]] = {}
    for r in sorted(runs, key=lambda r: (r["model"], r["seed"])):
        for npz in sorted(p for p in Path(r["_dir"]).glob("rollout*.npz") if p.is_file()):  # a FIFO would block
            split = npz.stem.removeprefix("rollout").lstrip("_")
            label = r.get("paper_name") or r["model"]
            chosen.setdefault((r["model"], split), (f"{label} seed {r['seed']} {split.replace('_', '/')}".strip(), npz))
    written = []
    for (model, split), (title, npz) in sorted(chosen.items()):
        # names come from metrics.json: made safe, and cut with a hash when long ("File name too long")
        name = f"rollout_{file_name_part(model)}_{file_name_part(split)}.gif" if split else f"rollout_{file_name_part(model)}.gif"
        gif = write_gif(npz, title, figures / name)
        if gif is not None:
            written.append(gif)
    return written
