"""support/metrics.py: the numbers of a metrics line, the resume trim, the sample grid, live reporting, and what a run
prints."""

import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from support import metrics
from support import plot
import train
from support.metrics import save_grid, step_metrics, trim_metrics, write_metrics


def test_step_metrics_by_category_by_hand():
    rewards = [(1.0, "counting"), (0.5, "counting"), (0.0, "colors"), (1.0, "colors")]
    m = step_metrics(3, rewards, {"gen_kl": 0.25}, lr=1e-5, seconds=2.0)
    assert m["step"] == 3 and m["lr"] == 1e-5 and m["seconds"] == 2.0 and m["gen_kl"] == 0.25
    assert m["reward_mean"] == pytest.approx(0.625)
    assert m["reward_std"] == pytest.approx(((0.375**2 + 0.125**2 + 0.625**2 + 0.375**2) / 4) ** 0.5)  # population
    assert m["self_qa_acc"] == pytest.approx(0.5)  # only a reward of 1 is a right answer
    assert m["reward/counting"] == pytest.approx(0.75) and m["reward_std/counting"] == pytest.approx(0.25)
    assert m["reward/colors"] == pytest.approx(0.5) and m["reward_std/colors"] == pytest.approx(0.5)


def test_trim_keeps_lines_up_to_the_checkpoint(tmp_path):
    for step in (0, 1, 2, 3):
        write_metrics(tmp_path, {"step": step})
    trim_metrics(tmp_path / "metrics.jsonl", 2)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    trim_metrics(tmp_path / "missing.jsonl", 2)  # nothing to trim is not an error
    assert not (tmp_path / "missing.jsonl").exists()


def test_grid_shows_groups_by_row_with_reward_frames_and_gutters(tmp_path):
    (tmp_path / "samples").mkdir()
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    pixels = torch.tensor(colors, dtype=torch.float32).div(255).view(6, 3, 1, 1).expand(6, 3, 8, 8)  # flat tiles
    records = [{"tag": "counting", "prompt": "a photo of two cats", "answer": "two cats"}] * 3 + \
              [{"tag": "colors", "prompt": "a photo of a red dog", "answer": "red"}] * 3
    rewards = [1.0, 0.5, 0.0, 0.0, 1.0, 0.25]
    path = save_grid(tmp_path, 7, pixels, 3, records, ["two cats", "three cats", "a very long answer " * 9] * 2,
                     rewards)
    assert path.name == "step-000007.png" and [p.name for p in (tmp_path / "samples").iterdir()] == [path.name]
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] == metrics.GUTTER + 3 * (metrics.TILE + metrics.GUTTER)
    corners = []
    for color in colors:  # each image fills exactly one TILE x TILE square (8 px enlarged by nearest)
        ys, xs = np.nonzero((image == color).all(-1))
        assert len(ys) == metrics.TILE ** 2 and np.ptp(ys) == np.ptp(xs) == metrics.TILE - 1, color
        corners.append((ys.min(), xs.min()))
    assert corners[0][0] == corners[1][0] == corners[2][0] < corners[3][0] == corners[4][0] == corners[5][0]
    assert corners[0][1] < corners[1][1] < corners[2][1] and corners[0][1] == corners[3][1]  # a group per row
    for (y, x), reward in zip(corners, rewards):
        assert tuple(image[y + 5, x - 2]) == metrics.reward_color(reward)  # the frame says the reward
        assert tuple(image[y + 5, x - 6]) == metrics.BACKGROUND  # a gutter beyond it
    y, x = corners[2]  # the long answer stays under its own image, in at most CAPTION_LINES lines
    below = image[y + metrics.TILE + 3 :, x + metrics.TILE + 3 : x + metrics.TILE + metrics.GUTTER - 3]
    assert (below == metrics.BACKGROUND).all()


def test_reward_colors_and_text_fitting_by_hand():
    assert metrics.reward_color(0) == metrics.REWARD_COLORS[0] == metrics.reward_color(-3)
    assert metrics.reward_color(0.5) == metrics.REWARD_COLORS[1]
    assert metrics.reward_color(1) == metrics.REWARD_COLORS[2] == metrics.reward_color(7)
    draw, font = ImageDraw.Draw(Image.new("RGB", (1, 1))), ImageFont.load_default(size=11)
    assert metrics.fit_text(draw, "two cats", font, 200, 3) == ["two cats"]
    lines = metrics.fit_text(draw, "the cat is left of the dog " * 10, font, 100, 3)
    assert len(lines) == 3 and lines[-1].endswith("...")
    assert all(draw.textlength(text, font=font) <= 100 for text in lines)
    assert metrics.fit_text(draw, "", font, 100, 3) == [""]
    assert draw.textlength(metrics.fit_text(draw, "x" * 200, font, 60, 2)[0], font=font) <= 60  # one huge word


def test_large_images_are_scaled_down_to_a_tile():
    tile = metrics.to_tile(torch.rand(3, 384, 384))
    assert tile.size == (metrics.TILE, metrics.TILE)


class Recorder:
    """Stands in for SummaryWriter and for a wandb run: records what the Reporter hands it."""

    def __init__(self, *args, **kwargs):
        self.opened, self.scalars, self.logged, self.closed = (args, kwargs), [], [], False
        Recorder.made += 1
        self.id, self.step = kwargs.get("id", f"run-id-{Recorder.made}"), Recorder.held  # a wandb run's id, next step
        Recorder.last = self

    held, made = 0, 0

    def add_scalar(self, key, value, step):
        self.scalars.append((step, key, value))

    def log(self, values, step):
        self.logged.append((step, dict(values)))

    def close(self):
        self.closed = True

    finish = close


def test_a_run_logs_cleanly_and_reports_exactly_its_metrics_lines(tmp_path, monkeypatch, capfd):
    """--report-to tensorboard hands TensorBoard every metrics.jsonl line (same keys, same step); the console
    shows one progress bar carrying the latest numbers, a step line every --sample-every steps, and no
    transformers progress bars (checkpoints are written every step here)."""
    board = types.ModuleType("torch.utils.tensorboard")  # tensorboard is not installed: a stand-in that records
    board.SummaryWriter = Recorder
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", board)
    out = tmp_path / "run"
    train.main(["--model", "janus-tiny", "--num-prompts", "40", "--prompts-per-step", "2", "--group-size", "2",
                "--micro-batch", "4", "--max-answer-tokens", "4", "--threads", "1", "--steps", "3",
                "--sample-every", "3", "--save-every", "1", "--eval-every", "3", "--eval-prompts", "2",
                "--eval-samples", "1", "--report-to", "tensorboard", "--out", str(out)])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2, 3]  # the step-0 evaluation included
    written = Recorder.last
    assert written.opened[1]["log_dir"] == str(out / "tensorboard") and written.closed
    reported = {}
    for step, key, value in written.scalars:
        reported.setdefault(step, {})[key] = value
    assert reported == {m["step"]: {k: v for k, v in m.items() if k != "step"} for m in lines}
    printed, errors = capfd.readouterr()
    assert [line.split("|")[0].split()[1] for line in printed.splitlines() if line.startswith("step ")] == ["1", "3"]
    assert "judge" not in printed.split("step     3")[0]  # the judge's number only where it was measured
    assert "reward=" in errors and "self-QA=" in errors  # the bar's postfix
    assert "Writing model shards" not in errors and "Loading weights" not in errors
    assert len(list(out.glob("ckpt-*"))) == 2  # checkpoints were written (keep 2), silently
    assert (out / "curves.png").exists()
    assert written.opened[1]["purge_step"] == 0  # a new run: nothing earlier in its folder is kept
    # resumed from step 2, the run logs step 3 again: TensorBoard hides the first run's step 3 (purge_step), as
    # metrics.jsonl drops its line, so the dashboard shows one run
    train.main(["--resume", str(out / "ckpt-000002"), "--steps", "3", "--out", str(out)])
    assert Recorder.last is not written and Recorder.last.opened[1]["purge_step"] == 3
    assert {step for step, _, _ in Recorder.last.scalars} == {3}
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]


def test_a_one_step_run_still_gets_its_curves(tmp_path):
    write_metrics(tmp_path, {"step": 1, "reward_mean": 0.5, "loss": 0.0})  # one point: nothing moved yet
    assert train.finish_run(train.Config(), tmp_path, 0) is None
    assert Image.open(tmp_path / "curves.png").size[0] == 2 * plot.PANEL[0]  # its two panels, flat


def test_reporter_to_wandb(tmp_path, monkeypatch):
    fake = types.ModuleType("wandb")
    fake.init = Recorder
    monkeypatch.setitem(sys.modules, "wandb", fake)
    (tmp_path / "run-7").mkdir()  # train.py claims the run folder first
    reporter = metrics.Reporter("wandb", tmp_path / "run-7", {"lr": 1e-5})
    reporter.log({"step": 4, "reward_mean": 0.5, "eval/geneval": 0.75})
    reporter.close()
    assert Recorder.last.opened[1]["config"] == {"lr": 1e-5} and Recorder.last.opened[1]["name"] == "run-7"
    assert Recorder.last.logged == [(4, {"reward_mean": 0.5, "eval/geneval": 0.75})] and Recorder.last.closed
    assert (tmp_path / "run-7" / metrics.WANDB_ID_FILE).read_text() == Recorder.last.id + "\n"


def test_a_resumed_run_continues_its_wandb_run_only_where_wandb_can(tmp_path, monkeypatch, capsys):
    """On resume the W&B run this folder started goes on under its id when W&B holds no step past the checkpoint
    (W&B can neither drop nor replace a logged step). Else, offline, or when W&B refuses, the resume is a new W&B
    run, said so, and the folder keeps the new id. A restart from step 0 is a new run."""
    fake = types.ModuleType("wandb")
    fake.init = Recorder
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out, ids = tmp_path / "run", []
    out.mkdir()

    def resume(start):
        metrics.Reporter("wandb", out, {}, start=start).close()
        ids.append((out / metrics.WANDB_ID_FILE).read_text().strip())
        return Recorder.last.opened[1], capsys.readouterr().out

    opened, _ = resume(0)  # the first run: a new W&B run, its id kept in the folder
    assert "id" not in opened
    monkeypatch.setattr(Recorder, "held", 11)  # it stopped right after the checkpoint at step 10
    opened, said = resume(10)
    assert opened["id"] == ids[0] and opened["resume"] == "allow" and ids[1] == ids[0] and said == ""
    monkeypatch.setattr(Recorder, "held", 13)  # it logged steps 11 and 12 past the checkpoint
    opened, said = resume(10)
    assert "id" not in opened and ids[2] != ids[0] and "holds steps 11 to 12" in said
    monkeypatch.setenv("WANDB_MODE", "offline")
    opened, said = resume(10)
    assert "id" not in opened and ids[3] != ids[2] and "offline" in said
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setattr(Recorder, "held", 0)

    def refuse(*args, **kwargs):
        if "id" in kwargs:
            raise RuntimeError("run was previously created and deleted")
        return Recorder(*args, **kwargs)

    monkeypatch.setattr(fake, "init", refuse)
    opened, said = resume(10)
    assert "id" not in opened and ids[4] != ids[3] and "deleted" in said
    monkeypatch.setattr(fake, "init", Recorder)
    opened, _ = resume(0)  # a restart from step 0 is a new W&B run
    assert "id" not in opened and ids[5] != ids[4]


def test_reporters_refuse_missing_packages(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ValueError, match="pip install tensorboard"):
        metrics.Reporter("tensorboard", tmp_path, {})
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ValueError, match="pip install wandb"):
        metrics.Reporter("wandb", tmp_path, {})
    metrics.Reporter("none", tmp_path, {}).log({"step": 1, "a": 1.0})  # off: nothing to write to
