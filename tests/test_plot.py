"""Tests for plot.py: a PNG of the right size from a metrics file with a missing key, a NaN, a sparse
key and a half-written last line; the pure helpers by hand."""

import math

import numpy as np
import pytest
from PIL import Image

import plot

LOG = """{"step": 1, "reward_mean": 0.1, "loss": NaN, "reward/colors": 0.2, "reward/counting": 0.0}
{"step": 2, "reward_mean": 0.3, "loss": 0.5}

{"step": 3, "reward_mean": NaN, "loss": 0.4, "reward/colors": 0.5, "reward/counting": 0.25}
{"step": 4, "reward_mean": 0.5, "loss": null, "eval/judge_acc": 0.2}
{"step": 5, "reward_mean": 0.45, "loss": 0.35}
{"step": 6, "rew"""


def panel_has(image, column, row, color):
    box = np.asarray(image)[row * plot.PANEL[1]:(row + 1) * plot.PANEL[1], column * plot.PANEL[0]:(column + 1) * plot.PANEL[0]]
    return bool((box == color).all(-1).any())


def test_cli_writes_png_of_the_right_size(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(LOG)
    out = tmp_path / "curves.png"
    plot.main([str(tmp_path), "--out", str(out), "--keys", "reward_mean,loss,missing,reward/*,eval/judge_acc"])
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (2 * plot.PANEL[0], 3 * plot.PANEL[1])  # 5 panels, 2 per row
    first, second = plot.COLORS[:2]
    assert panel_has(image, 0, 0, first) and not panel_has(image, 0, 0, second)  # reward_mean: one series
    assert not panel_has(image, 0, 1, first)  # "missing": an empty panel
    assert panel_has(image, 1, 1, first) and panel_has(image, 1, 1, second)  # reward/*: two series
    assert panel_has(image, 0, 2, first)  # eval/judge_acc: a single point is still drawn
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left


def test_plot_metrics_defaults_and_columns(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(LOG)
    rows = plot.read_metrics(path)
    assert len(rows) == 5  # blank and half-written lines skipped
    written = plot.plot_metrics(rows, path=tmp_path / "d.png", columns=3)
    # default keys present in the log: reward_mean, reward/*, loss, eval/judge_acc -> 4 panels, 3 per row
    assert Image.open(written).size == (3 * plot.PANEL[0], 2 * plot.PANEL[1])


def test_series_segments_and_ticks_by_hand(tmp_path):
    rows = [{"step": 1, "a": 1.0}, {"step": 2}, {"step": 3, "a": float("nan")}, {"step": 4, "a": 2},
            {"step": 5, "a": 3.0}, {"step": 6, "a": None}, {"step": 7, "a": 4.0}]
    points = plot.series(rows, "a")
    assert [x for x, _ in points] == [1, 3, 4, 5, 6, 7]  # step 2 has no "a": skipped, not a gap
    assert plot.segments(points) == [[(1, 1.0)], [(4, 2.0), (5, 3.0)], [(7, 4.0)]]
    assert plot.segments([]) == [] and plot.segments([(1, math.nan)]) == []
    assert plot.nice_ticks(0.03, 0.97) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert plot.nice_ticks(1, 20) == [0, 5, 10, 15, 20]
    ticks = plot.nice_ticks(1e-5, 1e-5)  # a flat line gets a window around it
    assert ticks[0] < 1e-5 < ticks[-1]
    assert plot.nice_ticks(-0.3, 0.1)[0] <= -0.3 and 0.0 in plot.nice_ticks(-0.3, 0.1)
