"""What a training run leaves behind for a reader: metrics.jsonl, sample grids, curves and a before/after table.

train.py calls these on rank 0 only (the numbers were already averaged or gathered over ranks):

    step_metrics     one metrics.jsonl line: reward mean/std overall and per category, self-QA accuracy,
                     the learner's statistics (KL, clip fraction, entropy, grad norm, stage times), the lr
    write_metrics    append that line
    trim_metrics     on resume, drop lines past the checkpoint's step so the log reads as one run
    save_grid        samples/step-NNNNNN.png, one group per row, written atomically
    finish_run       curves.png of the whole run and, with held-out evaluation on, before_after.md

Nothing here touches a model or a rank: every function takes plain numbers, paths and tensors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

# the panels of curves.png, in order; keys a run never logged are skipped
FIRST_CURVES = ("reward_mean", "eval/geneval", "eval/self_qa", "eval/und", "eval/imbalance")


def step_metrics(step: int, rewards_and_tags: list[tuple[float, str]], stats: dict, lr: float, seconds: float) -> dict:
    """Reward mean/std overall and per category, self-QA accuracy (reward 1 = fully right), plus `stats`."""
    rewards = torch.tensor([r for r, _ in rewards_and_tags], dtype=torch.float64)
    tags = [t for _, t in rewards_and_tags]
    m = {"step": step, "reward_mean": rewards.mean().item(), "reward_std": rewards.std(unbiased=False).item(),
         "self_qa_acc": (rewards >= 1.0).double().mean().item()}
    for tag in sorted(set(tags)):
        r = rewards[[i for i, t in enumerate(tags) if t == tag]]
        m[f"reward/{tag}"] = r.mean().item()
        m[f"reward_std/{tag}"] = r.std(unbiased=False).item()
    m.update(stats)
    m.update(lr=lr, seconds=seconds)
    return m


def write_metrics(out: Path, m: dict) -> None:
    with open(Path(out) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(m) + "\n")


def trim_metrics(path: Path, step: int, warn=print) -> None:
    """On resume, drop metric lines past the checkpoint's step so the log reads as one run (at step 0, all of
    them: the restarted run writes its own). A last line cut short by a killed run is dropped with a warning;
    any other line that is not a JSON object with a step is an error naming the file and the line."""
    from checkpoint import atomic_write_text

    if not path.exists():
        return
    lines = path.read_text(errors="replace").splitlines()
    kept = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            m = json.loads(line)
            line_step = m["step"]
        except (ValueError, KeyError, TypeError) as err:
            if i == len(lines):  # appending is not atomic: a kill mid-write leaves a torn last line
                warn(f"warning: {path} line {i} is incomplete (the run was stopped while writing it); dropped")
                continue
            raise ValueError(f"{path} line {i} is not a metrics line ({type(err).__name__}: {err}): delete or "
                             f"repair that line, then resume again") from None
        if 0 < step and line_step <= step:
            kept.append(line)
    atomic_write_text(path, "".join(ln + "\n" for ln in kept))


def save_grid(out: Path, step: int, pixels: torch.Tensor, columns: int) -> Path:
    """samples/step-NNNNNN.png: the step's images, `columns` (a group) per row; temporary name, then rename."""
    from generate import image_grid

    grid = Path(out) / "samples" / f"step-{step:06d}.png"
    image_grid(pixels, columns).save(grid.with_suffix(".tmp.png"))
    os.replace(grid.with_suffix(".tmp.png"), grid)
    return grid


def finish_run(cfg, out: Path, held_out_count: int) -> str | None:
    """curves.png from metrics.jsonl, and the held-out before/after table when the run evaluated twice or more.
    Returns the table (also written to before_after.md), or None."""
    from checkpoint import atomic_write_text
    from evaluate import before_after
    from plot import DEFAULT_KEYS, plot_metrics, read_metrics

    rows = read_metrics(Path(out) / "metrics.jsonl")
    keys = dict.fromkeys(FIRST_CURVES + tuple(DEFAULT_KEYS))
    plot_metrics(rows, keys=[k for k in keys if any(k in r for r in rows) or "*" in k], path=Path(out) / "curves.png")
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if len(evals) < 2:
        return None
    table = before_after(cfg, evals[0], evals[-1])
    atomic_write_text(Path(out) / "before_after.md", table + "\n")
    print(f"\nheld-out evaluation ({held_out_count} prompts x {cfg.eval_samples} images):\n{table}")
    return table
