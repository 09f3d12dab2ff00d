"""metrics.py: the numbers of a metrics line, the resume trim, and the atomic sample grid."""

import json

import pytest
import torch

from metrics import save_grid, step_metrics, trim_metrics, write_metrics


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


def test_grid_is_written_whole_with_one_group_per_row(tmp_path):
    from PIL import Image

    (tmp_path / "samples").mkdir()
    pixels = torch.zeros(6, 3, 8, 8)
    pixels[3:] = 1.0  # the second group white
    path = save_grid(tmp_path, 7, pixels, columns=3)
    assert path.name == "step-000007.png" and [p.name for p in (tmp_path / "samples").iterdir()] == [path.name]
    image = Image.open(path)
    assert image.size == (3 * 10, 2 * 10)  # 1-px border around each 8-px tile
    assert image.getpixel((5, 5)) == (0, 0, 0) and image.getpixel((5, 15)) == (255, 255, 255)
