"""What a training run leaves behind for a reader: metrics.jsonl, sample grids, curves and a before/after table.

train.py calls these on rank 0 only (the numbers were already averaged or gathered over ranks):

    step_metrics     one metrics.jsonl line: reward mean/std overall and per category, self-QA accuracy,
                     the learner's statistics (KL, clip fraction, entropy, grad norm, stage times), the lr
    headline         its few numbers for the progress bar; step_line, the same as one printed line
    write_metrics    append that line (Reporter: the same line to TensorBoard or W&B, with --report-to)
    trim_metrics     on resume, drop lines past the checkpoint's step so the log reads as one run
    save_grid        samples/step-NNNNNN.png: one group per row, with its prompt, each image's answer and
                     reward, and a legend (draw_grid), written atomically

Nothing here touches a model or a rank: every function takes plain numbers, paths and tensors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

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


def headline(m: dict) -> dict:
    """The few numbers of a metrics line worth watching live (the progress bar's postfix), formatted."""
    shown = {"reward": f"{m['reward_mean']:.3f}", "self-QA": f"{m['self_qa_acc']:.3f}", "loss": f"{m['loss']:+.4f}"}
    for key in ("eval/geneval", "eval/judge_acc"):  # the held-out judge: the shapes world's, or GenEval's scorer
        if key in m:
            shown["judge"] = f"{m[key]:.3f}"
    return shown


def step_line(m: dict) -> str:
    """One printed line for a metrics line: step, reward mean and std, self-QA, loss, held-out judge, time."""
    shown = headline(m)
    judge = f" | judge {shown['judge']}" if "judge" in shown else ""
    return (f"step {m['step']:5d} | reward {shown['reward']} ± {m['reward_std']:.3f} | self-QA {shown['self-QA']} | "
            f"loss {shown['loss']}{judge} | {m['seconds']:.1f}s")


def write_metrics(out: Path, m: dict) -> None:
    with open(Path(out) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(m) + "\n")


def trim_metrics(path: Path, step: int, warn=print) -> None:
    """On resume, drop metric lines past the checkpoint's step so the log reads as one run (at step 0, all of
    them: the restarted run writes its own). A last line cut short by a killed run is dropped with a warning;
    any other line that is not a JSON object with a step is an error naming the file and the line."""
    from support.checkpoint import atomic_write_text

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


class Reporter:
    """Live logging (--report-to): every metrics.jsonl line, the same keys at the same step, to TensorBoard
    (<run>/tensorboard) or Weights & Biases. Both packages are optional and imported only when asked for.
    start: the step a resumed run continues from; TensorBoard drops the events a stopped run logged past it, as
    trim_metrics drops their lines. W&B cannot drop logged steps, so a resumed run continues its W&B run (the id is
    kept in <run>/wandb_id) only when that run stopped at the checkpoint; otherwise, offline, or when W&B will not
    resume it, the resumed run is a new W&B run, and it says why."""

    def __init__(self, kind: str, out: Path, config: dict, start: int = 0):
        self.kind, self.sink = kind, None
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
            except ImportError as err:
                raise ValueError("--report-to tensorboard: the tensorboard package is not installed; "
                                 "pip install tensorboard, or use --report-to none") from err
            # purge_step p: events at steps >= p are hidden; a resumed run logs from start + 1, a restart from 0
            self.sink = SummaryWriter(log_dir=str(Path(out) / "tensorboard"), purge_step=start + 1 if start else 0)
        elif kind == "wandb":
            try:
                import wandb  # optional
            except ImportError as err:
                raise ValueError("--report-to wandb: the wandb package is not installed; pip install wandb, "
                                 "or use --report-to none") from err
            self.sink = self._wandb_run(wandb, Path(out), config, start)
        elif kind != "none":
            raise ValueError(f"--report-to {kind!r}: choose one of none, tensorboard, wandb")

    @staticmethod
    def _wandb_run(wandb, out: Path, config: dict, start: int):
        """On resume, the W&B run this folder started, if it can go on; else a new W&B run, whose id the folder
        keeps from then on."""
        from support.checkpoint import atomic_write_text

        id_file = out / WANDB_ID_FILE
        if start and id_file.exists():
            run, why = continued_wandb_run(wandb, out, config, start, id_file.read_text().strip())
            if run is not None:
                return run
            print(f"--report-to wandb: this resume is a new W&B run, not the one in {id_file}: {why}")
        run = wandb.init(project=WANDB_PROJECT, name=out.name, dir=str(out), config=config)
        atomic_write_text(id_file, run.id + "\n")
        return run

    def log(self, m: dict) -> None:
        """One metrics line: {"step": s, key: value, ...}."""
        values = {k: v for k, v in m.items() if k != "step"}
        if self.kind == "tensorboard":
            for key, value in values.items():
                self.sink.add_scalar(key, value, m["step"])
        elif self.kind == "wandb":
            self.sink.log(values, step=m["step"])

    def close(self) -> None:
        if self.kind == "tensorboard":
            self.sink.close()
        elif self.kind == "wandb":
            self.sink.finish()


WANDB_PROJECT = "unirl"  # our choice of project name; the run is named after its folder
WANDB_ID_FILE = "wandb_id"  # in the run folder: the W&B run a resume continues


def continued_wandb_run(wandb, out: Path, config: dict, start: int, run_id: str):
    """(the W&B run `run_id` resumed, None) when it holds no step past `start`, else (None, why not). W&B ignores
    a logged step below its last one, so a run that went past the checkpoint would keep the old values there."""
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled"):  # offline W&B resumes nothing
        return None, "W&B is offline"
    try:
        run = wandb.init(project=WANDB_PROJECT, name=out.name, dir=str(out), config=config, id=run_id,
                         resume="allow")
    except Exception as err:  # e.g. the run was deleted on the server
        return None, f"W&B would not resume it ({type(err).__name__}: {err})"
    held = getattr(run, "step", 0) or 0  # the next step W&B accepts
    if held <= start + 1:
        return run, None
    run.finish()
    return None, f"it holds steps {start + 1} to {held - 1} from before the stop, which W&B cannot drop or replace"


def save_grid(out: Path, step: int, pixels: torch.Tensor, columns: int, records: list[dict], answers: list[str],
              rewards: list[float]) -> Path:
    """samples/step-NNNNNN.png: the step's images, one group (`columns` images of one prompt) per row, each
    row headed by its prompt and each image captioned with the model's answer and its reward; written
    atomically (temporary name, then rename)."""
    grid = Path(out) / "samples" / f"step-{step:06d}.png"
    tmp = grid.with_name(f".{grid.name}.tmp")
    draw_grid(pixels, columns, records, answers, rewards, title=f"step {step}").save(tmp, format="PNG", optimize=True)
    os.replace(tmp, grid)
    return grid


# sample grids: sizes in pixels, colors in RGB
TILE = 128  # every image is scaled to this side: small ones by an integer factor (sharp), large ones down
GUTTER = 12  # dark space between images and around rows; each image's reward frame takes 3 px of it
CAPTION_LINES = 3  # lines of the model's answer under an image; a longer answer ends in "..."
BACKGROUND, INK, DIM = (40, 40, 40), (235, 235, 235), (160, 160, 160)
REWARD_COLORS = ((225, 75, 65), (235, 175, 50), (70, 190, 110))  # reward 0, 0.5 and 1: red, amber, green


def reward_color(reward: float) -> tuple:
    """The reward's color, linear between REWARD_COLORS' stops (clamped to [0, 1])."""
    t = 2 * min(max(float(reward), 0.0), 1.0)
    low, high = REWARD_COLORS[min(int(t), 1)], REWARD_COLORS[min(int(t), 1) + 1]
    return tuple(round(a + (t - min(int(t), 1)) * (b - a)) for a, b in zip(low, high))


def fit_text(draw, text: str, font, width: int, lines: int) -> list[str]:
    """`text` wrapped on spaces into at most `lines` lines no wider than `width`; the last ends in "..." if cut."""
    words, out = text.split(), []
    while words and len(out) < lines:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line += " " + words.pop(0)
        out.append(line)
    cut = bool(words) or (out and draw.textlength(out[-1], font=font) > width)
    while out and cut and draw.textlength(out[-1] + "...", font=font) > width and len(out[-1]) > 1:
        out[-1] = out[-1][:-1]  # one word wider than the tile, or room for the ellipsis
    if out and cut:
        out[-1] += "..."
    return out or [""]


def to_tile(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> a TILE x TILE PIL image (nearest when enlarging, so cells stay crisp)."""
    array = (image.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
    picture = Image.fromarray(array)
    if picture.size == (TILE, TILE):
        return picture
    smaller = max(picture.size) < TILE
    return picture.resize((TILE, TILE), Image.NEAREST if smaller else Image.LANCZOS)


def draw_grid(pixels: torch.Tensor, columns: int, records: list[dict], answers: list[str], rewards: list[float],
              title: str = "") -> Image.Image:
    """One row per group: a header (tag, prompt, true answer, group mean), then its images, each framed and
    captioned by its reward and the model's own answer. A legend on top says how to read it."""
    font, small = ImageFont.load_default(size=13), ImageFont.load_default(size=11)
    line = 14  # caption line height for `small`
    n = pixels.shape[0]
    rows = (n + columns - 1) // columns
    width = GUTTER + columns * (TILE + GUTTER)
    header, caption = 20, 6 + line * (1 + CAPTION_LINES)  # per row: the prompt line; under each image
    legend = [f"{title}: one prompt's group of {columns} images per row, drawn by the model; under each image, "
              f"its reward and the model's own answer to the prompt's question about that image.",
              "Reward: that answer scored against the prompt's truth (1 all right, between: partial credit, "
              "0 wrong); the frame shows it too."]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    legend_lines = [text for paragraph in legend for text in fit_text(probe, paragraph, small, width - 2 * GUTTER, 4)]
    top = GUTTER + line * len(legend_lines) + 20  # the legend, then a color key
    image = Image.new("RGB", (width, top + rows * (header + TILE + caption) + GUTTER), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for k, text in enumerate(legend_lines):
        draw.text((GUTTER, GUTTER + line * k), text, fill=DIM, font=small)
    draw.text((GUTTER, top - 17), "reward", fill=DIM, font=small)
    x = GUTTER + round(draw.textlength("reward ", font=small))
    for value in (0.0, 0.5, 1.0):  # the color key
        y = top - 16
        draw.rectangle([x, y, x + 10, y + 10], fill=reward_color(value))
        draw.text((x + 14, y - 1), f"{value:g}", fill=DIM, font=small)
        x += 14 + round(draw.textlength(f"{value:g}", font=small)) + 12
    for r in range(rows):
        first = r * columns
        group = range(first, min(first + columns, n))
        y = top + r * (header + TILE + caption)
        record = records[first]
        mean = sum(float(rewards[i]) for i in group) / len(group)
        truth = record.get("answer", "?")
        head = f"{record.get('tag', '')}: {record['prompt']}   (truth: {truth}; group mean {mean:.2f})"
        draw.text((GUTTER, y + 1), fit_text(draw, head, font, width - 2 * GUTTER, 1)[0], fill=INK, font=font)
        for c, i in enumerate(group):
            x, y_image = GUTTER + c * (TILE + GUTTER), y + header
            color = reward_color(rewards[i])
            image.paste(to_tile(pixels[i]), (x, y_image))
            draw.rectangle([x - 3, y_image - 3, x + TILE + 2, y_image + TILE + 2], outline=color, width=3)
            draw.text((x, y_image + TILE + 5), f"reward {float(rewards[i]):.2f}", fill=color, font=small)
            for k, text in enumerate(fit_text(draw, answers[i], small, TILE, CAPTION_LINES)):
                draw.text((x, y_image + TILE + 5 + line * (k + 1)), text, fill=INK, font=small)
    return image
