"""Tests for support/plot.py: a PNG of the right size from a metrics file with a missing key, a NaN, a sparse
key and a half-written last line; the default panels leave out what never moved; the pure helpers by hand."""

import math

import numpy as np
import pytest
from PIL import Image

from support import plot

LOG = """{"step": 1, "reward_mean": 0.1, "loss": NaN, "reward/colors": 0.2, "reward/counting": 0.0}
{"step": 2, "reward_mean": 0.3, "loss": 0.5}

{"step": 3, "reward_mean": NaN, "loss": 0.4, "reward/colors": 0.5, "reward/counting": 0.25}
{"step": 4, "reward_mean": 0.5, "loss": null, "eval/judge_acc": 0.2}
{"step": 5, "reward_mean": 0.45, "loss": 0.35}
{"step": 6, "rew"""


def panel_box(image, column, row):
    return np.asarray(image)[plot.HEADER + row * plot.PANEL[1]:plot.HEADER + (row + 1) * plot.PANEL[1],
                             column * plot.PANEL[0]:(column + 1) * plot.PANEL[0]]


def panel_has(image, column, row, color):
    return bool((panel_box(image, column, row) == color).all(-1).any())


def test_cli_writes_png_of_the_right_size(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(LOG)
    out = tmp_path / "curves.png"
    plot.main([str(tmp_path), "--out", str(out), "--keys", "reward_mean,loss,missing,reward/*,eval/judge_acc",
               "--columns", "2"])
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (2 * plot.PANEL[0], plot.HEADER + 3 * plot.PANEL[1])  # 5 panels
    first, second = plot.COLORS[:2]
    assert panel_has(image, 0, 0, first) and not panel_has(image, 0, 0, second)  # reward_mean: one series
    assert not panel_has(image, 0, 1, first)  # "missing": an empty panel
    assert panel_has(image, 1, 1, first) and panel_has(image, 1, 1, second)  # reward/*: two series
    assert panel_has(image, 0, 2, first)  # eval/judge_acc: a single point is still drawn
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left


def test_default_panels_leave_out_what_never_moved():
    rows = [{"step": s, "reward_mean": 0.5 + 0.01 * s, "loss": (-1) ** s * 1e-7, "gen_kl": 0.0, "lr": 1e-4,
             "reward/counting": 0.1 * s % 1, "reward/colors": 1.0} for s in range(1, 31)]
    rows[9].update({"eval/geneval": 0.5, "eval/geneval/counting": 0.25, "eval/geneval/colors": 1.0})
    rows[29].update({"eval/geneval": 0.6, "eval/geneval/counting": 0.5, "eval/geneval/colors": 1.0})
    charts = dict(plot.default_panels(rows))
    assert list(charts) == ["reward on the rollouts (self-QA: share fully right)", "reward by category",
                            "held-out: judge, self-QA, understanding", "held-out judge by category"]
    # the loss at +-1e-7, a zero KL and a constant lr: no panel; a flat category stays beside a moving one
    assert set(charts["held-out judge by category"]) == {"counting", "colors"}
    assert charts["held-out: judge, self-QA, understanding"] == {"eval/geneval": [(10.0, 0.5), (30.0, 0.6)]}
    flat = [{"step": 1, "loss": 0.0}, {"step": 2, "loss": 0.0}]  # nothing moved at all: draw what there is
    assert plot.default_panels(flat) == [] and plot.default_panels(flat, flat_too=True) == [("loss", {"loss": [
        (1.0, 0.0), (2.0, 0.0)]})]
    with pytest.raises(ValueError, match="nothing to plot"):
        plot.plot_metrics([{"step": 1, "foo": 0.5}, {"step": 2, "foo": 0.7}])


def test_dense_series_draw_faint_with_a_bold_average_and_sparse_ones_draw_dots(tmp_path):
    rows = [{"step": s, "reward_mean": (s % 2) * 0.5, **({"eval/geneval": s / 60} if s % 10 == 0 else {})}
            for s in range(60)]
    image = Image.open(plot.plot_metrics(rows, path=tmp_path / "c.png"))
    assert image.size == (2 * plot.PANEL[0], plot.HEADER + plot.PANEL[1])  # two panels that moved, one row
    blue, red = plot.COLORS[:2]
    assert panel_has(image, 0, 0, plot.tint(blue, plot.FAINT)) and panel_has(image, 0, 0, blue)
    held_out = panel_box(image, 1, 0)
    assert not (held_out == plot.tint(blue, plot.FAINT)).all(-1).any()  # 6 evaluations: no smoothing
    # the bold line is the average: it runs through the middle of the 0 / 0.5 zigzag, not along its edges
    ys = np.nonzero((panel_box(image, 0, 0)[:, plot.LEFT + 200] == blue).all(-1))[0]
    lo, hi = plot.PANEL[1] - plot.BOTTOM - plot.INSET, plot.TOP + plot.INSET
    assert len(ys) and all(hi + 20 < y < lo - 20 for y in ys)


def test_ema_and_moves_by_hand():
    nan = math.nan
    smoothed = plot.ema([(1, 1.0), (2, 3.0), (3, nan), (4, 5.0)], weight=0.5)
    assert smoothed[0] == (1, 1.0) and smoothed[1] == (2, pytest.approx((0.25 + 1.5) / 0.75))  # debiased
    assert math.isnan(smoothed[2][1]) and smoothed[3] == (4, 5.0)  # a gap restarts the average
    assert not plot.moves([(1, 1e-7), (2, -1e-7)])  # float noise around zero
    assert not plot.moves([(1, 1e-4), (2, 1e-4), (3, nan)]) and not plot.moves([])
    assert plot.moves([(1, 0.1), (2, 0.2)]) and plot.moves([(1, 1e-5), (2, 3e-5)])


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
