"""Line charts of a run's metrics.jsonl, drawn with pillow alone (matplotlib is no dependency of unirl).

    python -m support.plot runs/x/metrics.jsonl --out curves.png
    python -m support.plot runs/x --out rewards.png --keys 'reward_mean,self_qa_acc,reward/*'

By default one panel per quantity worth watching (DEFAULT_PANELS): the rollouts' reward overall and by
category, the held-out judge overall and by category, self-QA, zero-variance groups, KL, entropy, ...
A panel where nothing moved (the loss at mu = 1, a KL with --kl-beta 0, a constant learning rate) is left
out. --keys instead draws one panel per key, moving or not; a key with * draws every matching series in
one panel ("reward/*": one line per tag).

A dense series (one value per step) is drawn faint, with its exponential moving average bold on top; a
sparse one (held-out evaluations every k steps) as a line through dots. Rows without the key are skipped,
so sparse keys join up; a NaN, inf or null breaks the line; a key found in no row gets an empty panel that
says so. From code (train.py): plot_metrics(rows, keys=None, path=...).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# the default panels: (title, keys); a key with * matches several series. Keys a run never logged are skipped,
# so one table serves the shapes world's evaluation (eval/geneval...) and GenEval's scorer (eval/judge_acc...)
DEFAULT_PANELS = (
    ("reward on the rollouts (self-QA: share fully right)", ("reward_mean", "self_qa_acc")),
    ("reward by category", ("reward/*",)),
    ("held-out: judge, self-QA, understanding", ("eval/geneval", "eval/judge_acc", "eval/self_qa", "eval/self_qa_acc",
                                                 "eval/und")),
    ("held-out judge by category", ("eval/geneval/*", "eval/judge_acc/*")),
    ("held-out self-QA by category", ("eval/self_qa/*", "eval/self_qa_acc/*")),
    ("held-out imbalance: judge and answer disagree", ("eval/imbalance/*", "eval/judge_yes_self_no",
                                                      "eval/judge_no_self_yes")),
    ("zero-variance groups (no GRPO signal)", ("zero_var_frac",)),
    ("loss", ("loss",)),
    ("KL to the starting model", ("gen_kl", "und_kl")),
    ("clip fraction", ("gen_clip_frac", "und_clip_frac")),
    ("entropy of the sampled image tokens", ("gen_entropy", "und_entropy")),
    ("grad norm", ("grad_norm",)),
    ("learning rate", ("lr",)),
    ("seconds per stage", ("t_rollout", "t_understand", "t_learn")),
)
PANEL = (460, 250)  # one panel's width and height in pixels
LEFT, RIGHT, TOP, BOTTOM = 58, 150, 26, 34  # margins of the frame inside a panel; the legend sits on the right
HEADER = 22  # the line above the panels that says how to read them
INSET = 6  # the extreme ticks sit this far inside the frame, so lines never run along it
INK, FRAME, GRID = (20, 20, 20), (120, 120, 120), (228, 228, 228)
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # one per series, in order
FAINT = 0.25  # a raw series is drawn at this share of its color over white
SMOOTHING = 0.9  # EMA weight of the past (TensorBoard's slider; our choice): about the last 10 steps count
DENSE = 20  # a series with at least this many points is smoothed; fewer (evaluations) are drawn point by point
FLAT = 1e-6  # a series whose values all lie within FLAT x max(1, |value|) of each other never moved


def read_metrics(path) -> list[dict]:
    """One dict per line; blank or half-written lines (a run that is still writing) are skipped."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def series(rows: list[dict], key: str, x: str = "step") -> list[tuple[float, float]]:
    """(x, y) for every row that has `key`; y is NaN where the value is NaN, inf, null or not a number."""
    points = []
    for n, row in enumerate(rows):
        if key in row:
            value = row[key]
            y = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan
            points.append((float(row.get(x, n)), y))
    return points


def segments(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The runs of finite points between NaNs; each is drawn as one line."""
    runs, run = [], []
    for x, y in points:
        if not math.isnan(y):
            run.append((x, y))
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    return runs


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values 1, 2 or 5 x 10^k apart whose first and last enclose [lo, hi]."""
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1e-300):  # a flat line: open a window around it
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [(i * step if i else 0.0) for i in range(first, last + 1)]


def label(value: float) -> str:
    return f"{value:.4g}"


def text_width(draw, text, font) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0]


def ema(points: list[tuple[float, float]], weight: float = SMOOTHING) -> list[tuple[float, float]]:
    """Exponential moving average of the finite points, restarting after each gap (NaN kept as a gap):
    s_t = weight * s_(t-1) + (1 - weight) * y_t, divided by 1 - weight^t so the first values are not pulled to 0."""
    out, mean, count = [], 0.0, 0
    for x, y in points:
        if math.isnan(y):
            out.append((x, y))
            mean, count = 0.0, 0
            continue
        mean, count = weight * mean + (1 - weight) * y, count + 1
        out.append((x, mean / (1 - weight**count)))
    return out


def moves(points: list[tuple[float, float]]) -> bool:
    """False when every finite value is the same up to FLAT (relative to the values' size, at least 1): a series
    that is zero or constant by construction, such as the loss at mu = 1 (+-1e-7 of float noise)."""
    ys = [y for _, y in points if not math.isnan(y)]
    return bool(ys) and max(ys) - min(ys) > FLAT * max(1.0, max(abs(y) for y in ys))


def tint(color: tuple, share: float) -> tuple:
    """`color` at `share` over white."""
    return tuple(round(255 - share * (255 - c)) for c in color)


def draw_panel(draw, x0: int, y0: int, title: str, named: dict, font, x_name: str, x_range=None) -> None:
    """One chart in the PANEL-sized box at (x0, y0): named = {series name: [(x, y), ...]}. x_range: the x
    extent shared by all panels (default: this panel's own)."""
    left, top, right, bottom = x0 + LEFT, y0 + TOP, x0 + PANEL[0] - RIGHT, y0 + PANEL[1] - BOTTOM
    draw.text((x0 + (PANEL[0] - text_width(draw, title, font)) // 2, y0 + 7), title, fill=INK, font=font)
    finite = [(x, y) for points in named.values() for x, y in points if not math.isnan(y)]
    if not finite:
        draw.rectangle([left, top, right, bottom], outline=FRAME)
        draw.text(((left + right) // 2 - 20, (top + bottom) // 2 - 6), "no data", fill=FRAME, font=font)
        return
    x_lo, x_hi = x_range or (min(x for x, _ in finite), max(x for x, _ in finite))
    xs, ys = nice_ticks(x_lo, x_hi), nice_ticks(min(y for _, y in finite), max(y for _, y in finite))
    to_px = lambda x: left + INSET + (x - xs[0]) / (xs[-1] - xs[0]) * (right - left - 2 * INSET)  # noqa: E731
    to_py = lambda y: bottom - INSET - (y - ys[0]) / (ys[-1] - ys[0]) * (bottom - top - 2 * INSET)  # noqa: E731
    for y in ys:  # horizontal grid lines, tick marks and values on the left
        py = round(to_py(y))
        draw.line([(left, py), (right, py)], fill=GRID)
        draw.line([(left - 4, py), (left, py)], fill=FRAME)
        draw.text((left - 6 - text_width(draw, label(y), font), py - 6), label(y), fill=INK, font=font)
    for x in xs:  # tick marks and values below
        px = round(to_px(x))
        draw.line([(px, bottom), (px, bottom + 4)], fill=FRAME)
        draw.text((px - text_width(draw, label(x), font) // 2, bottom + 6), label(x), fill=INK, font=font)
    draw.text((right - text_width(draw, x_name, font), bottom + 19), x_name, fill=INK, font=font)
    draw.rectangle([left, top, right, bottom], outline=FRAME)
    shown = {}  # the line each series ends at, for the legend
    for (name, points), color in zip(named.items(), COLORS * 10):
        dense = sum(not math.isnan(y) for _, y in points) >= DENSE
        if dense:  # every step, faint; its moving average, bold
            for run in segments(points):
                draw.line([(to_px(x), to_py(y)) for x, y in run], fill=tint(color, FAINT), width=1)
        line = ema(points) if dense else points
        shown[name] = line
        for run in segments(line):
            pixels = [(to_px(x), to_py(y)) for x, y in run]
            if len(pixels) > 1:
                draw.line(pixels, fill=color, width=2)
            if not dense:  # a sparse series shows each measurement as a dot
                for px, py in pixels:
                    draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=color)
    # legend, right of the frame (it never hides a line): a swatch, the name and the bold line's last value
    for j, (name, line) in enumerate(shown.items()):
        last = next((label(y) for _, y in reversed(line) if not math.isnan(y)), "nan")
        y = top + 4 + 14 * j
        draw.line([(right + 8, y + 6), (right + 22, y + 6)], fill=COLORS[j % len(COLORS)], width=2)
        draw.text((right + 26, y), f"{name} {last}", fill=INK, font=font)


def matching(names: list[str], key: str) -> list[str]:
    """The logged names that `key` selects: itself, or every match of a * pattern, in order of first logging."""
    return [n for n in names if fnmatch.fnmatchcase(n, key)] if "*" in key else [key]


def panels(rows: list[dict], keys) -> list[tuple[str, dict]]:
    """(title, {series name: points}) per key, moving or not; "a/*" gathers every matching key into one panel."""
    names = list(dict.fromkeys(k for row in rows for k in row))  # every key, in order of first appearance
    return [(key, {n: series(rows, n) for n in matching(names, key)}) for key in keys]


def default_panels(rows: list[dict], flat_too: bool = False) -> list[tuple[str, dict]]:
    """DEFAULT_PANELS with the series the run logged, leaving out each panel where nothing moved (zero or constant
    by construction) unless flat_too. In a panel that stays, a flat series stays too (a category always judged
    right is news). A * pattern's series are named by what the * matched ("reward/counting" -> "counting")."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    out = []
    for title, keys in DEFAULT_PANELS:
        named = {}
        for key in keys:
            for name in matching(names, key):
                if name in names:
                    named[name[key.index("*"):] if "*" in key else name] = series(rows, name)
        if any(moves(points) for points in named.values()) or (flat_too and named):
            out.append((title, named))
    return out


def plot_metrics(rows: list[dict], keys=None, path="curves.png", columns: int = 3, x: str = "step") -> Path:
    """Write a PNG with one panel per key (default: default_panels, the quantities that moved, or all of them
    when nothing moved yet, as after one step); returns its path.

    The file is replaced atomically, so a viewer never sees half an image while training rewrites it."""
    charts = panels(rows, keys) if keys else (default_panels(rows) or default_panels(rows, flat_too=True))
    if not charts:
        raise ValueError("nothing to plot: the metrics hold none of the default panels' keys (pass --keys)")
    columns = max(1, min(columns, len(charts)))
    image = Image.new("RGB", (columns * PANEL[0], HEADER + math.ceil(len(charts) / columns) * PANEL[1]),
                      (255, 255, 255))
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    how = f"faint: every {x}; bold: its moving average (EMA {SMOOTHING}); dots: held-out evaluations."
    draw.text((8, 6), how if keys else how + " Panels where nothing moved are left out.", fill=FRAME, font=font)
    xs = [float(row.get(x, n)) for n, row in enumerate(rows)]
    for n, (title, named) in enumerate(charts):
        row, col = divmod(n, columns)
        draw_panel(draw, col * PANEL[0], HEADER + row * PANEL[1], title, named, font, x,
                   x_range=(min(xs), max(xs)) if xs else None)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Plot a run's metrics.jsonl as PNG line charts (pillow only).")
    ap.add_argument("metrics", help="metrics.jsonl, or the run folder holding it")
    ap.add_argument("--out", default="curves.png", help="PNG to write (default curves.png)")
    ap.add_argument("--keys", default=None, help="comma-separated keys, * allowed (default: DEFAULT_PANELS, "
                                                  "the quantities that moved)")
    ap.add_argument("--columns", type=int, default=3, help="panels per row (default 3)")
    args = ap.parse_args(argv)
    path = Path(args.metrics)
    rows = read_metrics(path / "metrics.jsonl" if path.is_dir() else path)
    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None
    print(f"wrote {plot_metrics(rows, keys, args.out, args.columns)} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
