"""Line charts of a run's metrics.jsonl, drawn with pillow alone (matplotlib is no dependency of unirl).

    python plot.py runs/x/metrics.jsonl --out curves.png
    python plot.py runs/x --out rewards.png --keys 'reward_mean,self_qa_acc,reward/*'

One small panel per key against "step": a frame, ticks with values, a title, and a legend holding
each series' last value. A key with * draws every matching series in one panel ("reward/*": one line
per tag). Rows without the key are skipped, so metrics logged every k steps (eval/...) join up; a NaN,
inf or null breaks the line; a key found in no row gets an empty panel that says so.
From code (train.py): plot_metrics(rows, keys, path).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# what `python plot.py run/metrics.jsonl` shows when no --keys are given (those present in the log)
DEFAULT_KEYS = ("reward_mean", "self_qa_acc", "reward/*", "zero_var_frac", "loss", "kl", "clip_frac", "grad_norm",
                "eval/self_qa_acc", "eval/judge_acc")
PANEL = (360, 240)  # one panel's width and height in pixels
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 24, 34  # margins of the frame inside a panel
INSET = 6  # the extreme ticks sit this far inside the frame, so lines never run along it
INK, FRAME, GRID = (20, 20, 20), (120, 120, 120), (228, 228, 228)
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # one per series, in order


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


def draw_panel(draw, x0: int, y0: int, title: str, named: dict, font, x_name: str) -> None:
    """One chart in the PANEL-sized box at (x0, y0): named = {series name: [(x, y), ...]}."""
    left, top, right, bottom = x0 + LEFT, y0 + TOP, x0 + PANEL[0] - RIGHT, y0 + PANEL[1] - BOTTOM
    draw.text((x0 + (PANEL[0] - text_width(draw, title, font)) // 2, y0 + 6), title, fill=INK, font=font)
    finite = [(x, y) for points in named.values() for x, y in points if not math.isnan(y)]
    if not finite:
        draw.rectangle([left, top, right, bottom], outline=FRAME)
        draw.text(((left + right) // 2 - 20, (top + bottom) // 2 - 6), "no data", fill=FRAME, font=font)
        return
    xs, ys = nice_ticks(min(x for x, _ in finite), max(x for x, _ in finite)), \
        nice_ticks(min(y for _, y in finite), max(y for _, y in finite))
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
    for (name, points), color in zip(named.items(), COLORS * 10):
        for run in segments(points):
            pixels = [(to_px(x), to_py(y)) for x, y in run]
            if len(pixels) == 1:  # an isolated point (between gaps) is a dot
                (px, py), = pixels
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
            else:
                draw.line(pixels, fill=color, width=2)
    # legend: a swatch, the name and its last finite value, in the corner of the frame that hides fewest points
    entries = [(name, color, next((label(y) for _, y in reversed(points) if not math.isnan(y)), "nan"))
               for (name, points), color in zip(named.items(), COLORS * 10)]
    width, height = max(text_width(draw, f"{n} {v}", font) for n, _, v in entries) + 26, 14 * len(entries) + 4
    dots = [(to_px(x), to_py(y)) for x, y in finite]
    dots += [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(dots, dots[1:])]  # segment midpoints too
    corners = [(right - width - 4, top + 4), (left + 4, top + 4), (right - width - 4, bottom - height - 4),
               (left + 4, bottom - height - 4)]
    lx, ly = min(corners, key=lambda c: sum(c[0] <= px <= c[0] + width and c[1] <= py <= c[1] + height
                                            for px, py in dots))
    draw.rectangle([lx, ly, lx + width, ly + height], fill=(255, 255, 255), outline=GRID)
    for j, (name, color, last) in enumerate(entries):
        draw.line([(lx + 4, ly + 9 + 14 * j), (lx + 18, ly + 9 + 14 * j)], fill=color, width=2)
        draw.text((lx + 22, ly + 3 + 14 * j), f"{name} {last}", fill=INK, font=font)


def panels(rows: list[dict], keys) -> list[tuple[str, dict]]:
    """(title, {series name: points}) per key; "a/*" gathers every matching key into one panel."""
    names = list(dict.fromkeys(k for row in rows for k in row))  # every key, in order of first appearance
    out = []
    for key in keys:
        matched = [n for n in names if fnmatch.fnmatchcase(n, key)] if "*" in key else [key]
        out.append((key, {n: series(rows, n) for n in matched}))
    return out


def plot_metrics(rows: list[dict], keys=None, path="curves.png", columns: int = 2, x: str = "step") -> Path:
    """Write a PNG with one panel per key (default: DEFAULT_KEYS present in rows); returns its path.

    The file is replaced atomically, so a viewer never sees half an image while training rewrites it."""
    present = {k for row in rows for k in row}
    keys = list(keys) if keys else [k for k in DEFAULT_KEYS if any(fnmatch.fnmatchcase(p, k) for p in present)]
    keys = keys or sorted(present - {x})
    if not keys:
        raise ValueError("nothing to plot: the metrics hold no keys")
    columns = max(1, min(columns, len(keys)))
    image = Image.new("RGB", (columns * PANEL[0], math.ceil(len(keys) / columns) * PANEL[1]), (255, 255, 255))
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    for n, (title, named) in enumerate(panels(rows, keys)):
        row, col = divmod(n, columns)
        draw_panel(draw, col * PANEL[0], row * PANEL[1], title, named, font, x)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Plot a run's metrics.jsonl as PNG line charts (pillow only).")
    ap.add_argument("metrics", help="metrics.jsonl, or the run folder holding it")
    ap.add_argument("--out", default="curves.png", help="PNG to write (default curves.png)")
    ap.add_argument("--keys", default=None, help="comma-separated keys, * allowed (default: the main RL signals)")
    ap.add_argument("--columns", type=int, default=2, help="panels per row (default 2)")
    args = ap.parse_args(argv)
    path = Path(args.metrics)
    rows = read_metrics(path / "metrics.jsonl" if path.is_dir() else path)
    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None
    print(f"wrote {plot_metrics(rows, keys, args.out, args.columns)} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
