"""Evaluation: GenEval export and scores, the model's self-QA on its own images, and the imbalance.

UniRL trains on the model's answers about its own images; GenEval judges the same images with a
detector. This file measures both on GenEval's prompts, for a preset, a released checkpoint or any
`ckpt-*` folder a run wrote:

  1. Export. --n-samples images per prompt of GenEval's evaluation_metadata.jsonl, in GenEval's layout,
         <out>/00000/metadata.jsonl      the prompt's metadata line, verbatim: one JSON object
         <out>/00000/samples/0000.png    sample 0 ... N-1
         <out>/00000/grid.png            all N side by side (for eyes; GenEval ignores it)
     so the official evaluator runs on the folder unchanged. Image k of prompt i draws from uniforms
     seeded on (seed, i, k): the same images on 1 or 8 GPUs and at any --batch-size (up to the
     floating-point noise between batch shapes, which can flip a near-tied token on a GPU).
  2. Scores. geneval.py's transformers rebuild of GenEval (--scorer builtin, CPU or GPU), the official
     evaluator's results file (--official-results), or none. Printed as GenEval's summary table.
  3. Self-QA. The model answers each image's templated question (prompts.add_questions) about the saved
     PNG, greedily, and reward.py scores the answer: mean reward and accuracy (reward == 1) per tag.
  4. Imbalance. Over the images that have both a judge verdict and a self-QA answer:
         judge_yes_self_no   the judge passes the image, the model's own answer is not fully right
                             (UniRL's released code counts this one: "t2i succeed, mmu fail")
         judge_no_self_yes   the judge fails the image, the model's own answer is fully right
                             (the model sees what is not there: a reward that generation can fool)
     each as a count and as a fraction of all those images, overall and per tag.
  5. One record. results.json (written atomically) holds scores, self-QA, imbalance and every setting:
     prompt-file sha256, model, weights hash, resolution, sampling settings, scorer checkpoints,
     device, world size, versions, date. results.jsonl holds the built-in scorer's per-image rows in
     the official format. export.json pins what the images depend on.

Resume: re-running the same command skips every prompt folder that holds metadata.jsonl and all N
samples; each folder is written under a temporary name and renamed, so none is ever half-written. A
folder exported with other settings (export.json differs) is refused rather than mixed.
Deliberate simplifications: answers are greedy with a fixed token cap; the scorer runs one image at a
time (as GenEval does).

Commands:
    python evaluate.py --model janus-tiny --geneval --out outputs/tiny --scorer none        # CPU, seconds
    python evaluate.py --model janus-pro-1b --model-path runs/x/ckpt-001000 --geneval \\
        --metadata evaluation_metadata.jsonl --out outputs/x-geneval --detector DIR --clip DIR
    torchrun --standalone --nproc_per_node 8 evaluate.py --model janus-pro-1b --geneval --out outputs/pro1b
    python evaluate.py ... --official-results outputs/x-geneval/official.jsonl   # after GenEval's own evaluator
In code, for train.py every k steps (no files, no collectives):
    result = evaluate_policy(policy, held_out, n_samples=2, cfg_scale=None, temperature=1.0, seed=0)
    log(flat_metrics(result))   # {"eval/self_qa_acc": ..., "eval/judge_acc": ..., ...}
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

import geneval
from cli import given_flags, opt
import prompts
import reward
from geneval import DEFAULT_CLIP, DEFAULT_DETECTOR
from generate import image_grid, image_uniforms, row_generators, sample_images_ar, sample_images_masked
from understand import answer_questions

METADATA_NAMES = ("geneval_metadata.jsonl", "evaluation_metadata.jsonl")  # searched in ./data, then .
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass
class Config:
    model: str = opt("janus-tiny", "preset, as in train.py (models/__init__.py PRESETS)")
    model_path: str | None = opt(None, "folder or hub id overriding the preset's weights (also a ckpt-* folder)")
    geneval: bool = opt(False, "export GenEval's prompts in its layout and score them (the benchmark to run)")
    metadata: str | None = opt(None, "GenEval metadata jsonl; default geneval_metadata.jsonl or "
                                     "evaluation_metadata.jsonl in ./data or .")
    out: str | None = opt(None, "export folder; default outputs/<model>-geneval. The same command resumes it")
    n_samples: int = opt(4, "images per prompt (GenEval: 4)")
    batch_size: int = opt(16, "images per sampling call, and per self-QA batch")
    cfg_scale: float | None = opt(None, "classifier-free guidance; default the family's (Janus 5)")
    temperature: float = opt(1.0, "image-token sampling temperature (full softmax, as in training)")
    steps: int | None = opt(None, "decoding steps of masked (MaskGIT-style) families; unused by autoregressive ones")
    seed: int = opt(0, "image k of prompt i draws from uniforms seeded on (seed, i, k)")
    scorer: str = opt("builtin", "builtin (geneval.py on transformers) | none")
    detector: str = opt(DEFAULT_DETECTOR, "Mask2Former hub id or local folder for --scorer builtin")
    clip: str = opt(DEFAULT_CLIP, "CLIP hub id or local folder for --scorer builtin")
    official_results: str | None = opt(None, "results jsonl of GenEval's own evaluator on --out; replaces --scorer")
    self_qa: bool = opt(True, "the model answers each image's question (--no-self-qa skips it)")
    max_answer_tokens: int = opt(24, "cap on answer length; answers are greedy")
    device: str = opt("auto", "auto | cpu | cuda")
    dtype: str = opt("float32", "weights' dtype: float32 | bfloat16")
    threads: int = opt(0, "torch CPU threads per process; 0 leaves torch's default")


def parse_config(argv: list[str] | None = None) -> Config:
    """argparse built from the dataclass; unknown flags are errors."""
    return Config(**given_flags(Config, argv, __doc__.split("\n")[0]))


def validate(cfg: Config) -> Path:
    """Every bad input fails here, naming the fix, before a model loads. Returns the metadata path."""
    from models import check_model_name

    check_model_name(cfg.model)
    if not cfg.geneval:
        raise ValueError("nothing to evaluate: pass --geneval (GenEval export + scores + self-QA); "
                         "other benchmarks call evaluate_policy from code")
    for name, allowed in {"scorer": ("builtin", "none"), "device": ("auto", "cpu", "cuda"),
                          "dtype": ("float32", "bfloat16")}.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"--{name} {getattr(cfg, name)!r}: choose one of {', '.join(allowed)}")
    if not 1 <= cfg.n_samples <= 9999:  # GenEval's sample names have four digits
        raise ValueError(f"--n-samples {cfg.n_samples}: use 1 to 9999")
    if cfg.batch_size < 1 or cfg.temperature < 0 or (cfg.steps is not None and cfg.steps < 1):
        raise ValueError("--batch-size and --steps must be >= 1 and --temperature >= 0")
    if cfg.official_results and not Path(cfg.official_results).is_file():
        raise ValueError(f"--official-results {cfg.official_results}: no such file")
    cfg.out = cfg.out or f"outputs/{cfg.model}-geneval"
    return find_metadata(cfg.metadata)


def find_metadata(path: str | None) -> Path:
    if path:
        if not Path(path).is_file():
            raise ValueError(f"--metadata {path}: no such file")
        return Path(path)
    for folder in (Path("data"), Path(".")):
        for name in METADATA_NAMES:
            if (folder / name).is_file():
                return folder / name
    raise ValueError(f"no GenEval metadata found ({' or '.join(METADATA_NAMES)} in ./data or .): download "
                     "prompts/evaluation_metadata.jsonl from github.com/djghosh13/geneval and pass --metadata PATH")


def read_metadata(path) -> tuple[list[str], list[dict]]:
    """The raw lines (written verbatim into the export) and the records with question and answer added."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]  # read_records skips blank lines the same way
    return lines, prompts.read_records(path)


# ------------------------------------------------------------------ images
@torch.no_grad()
def sample_images(policy, texts: list[str], jobs: list[tuple[int, int]], *, seed: int, cfg_scale, temperature: float,
                  steps: int | None = None):
    """Image k of prompt i (texts[i]) for each job (i, k), in one batch across prompts.

    Returns image tokens (B, T) and pixels (B, 3, H, W). Every image draws from its own stream seeded on
    (seed, i, k), exactly what rollout(step=i, first_index=k) would give it, so it is the same image
    whatever batch or rank it lands in. `steps` is the number of masked-decoding steps (None: the family's)."""
    device = next(policy.parameters()).device
    ids, mask = policy.tokenize_gen_prompts([texts[i] for i, _ in jobs])
    ids, mask = ids.to(device), mask.to(device)
    if policy.decoding == "ar":  # one uniform per token, row by row
        uniforms = torch.cat([image_uniforms(seed, i, k, 1, policy.num_image_tokens) for i, k in jobs])
        image_ids = sample_images_ar(policy, ids, mask, uniforms.to(device), cfg_scale=cfg_scale, temperature=temperature)
    elif policy.decoding == "masked":  # one generator per row: each row draws as it would alone
        generators = [row_generators(seed, i, k, 1, device)[0] for i, k in jobs]
        image_ids, _ = sample_images_masked(policy, ids, generators, cfg_scale=cfg_scale, temperature=temperature,
                                            timesteps=steps or getattr(policy, "eval_timesteps", policy.default_timesteps))
    else:
        raise ValueError(f"no sampler for decoding {policy.decoding!r}")
    # decoded one by one: a batched decoder moves pixels by ~1e-6, enough to flip a PNG's rounding
    return image_ids, torch.cat([policy.decode_images(row[None]) for row in image_ids])


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> an 8-bit RGB image (what GenEval and the self-QA read back)."""
    array = (pixels.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def from_pil(images: list) -> torch.Tensor:
    """PIL images -> pixels (N, 3, H, W) in [0, 1]."""
    return torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
                        for im in images])


def answer_images(policy, pixels: torch.Tensor, records: list[dict], max_answer_tokens: int = 24,
                  image_ids: torch.Tensor | None = None) -> list[str]:
    """The model's greedy answer to each record's question about its image.

    With the image's tokens at hand the model reads them as in training (Show-o: the ids themselves, as
    UniRL's evaluation does); from saved PNGs it encodes the pixels (Show-o: MAGVIT-v2 re-encoding)."""
    device = next(policy.parameters()).device
    if image_ids is not None:
        und = policy.images_for_understanding(image_ids.to(device), pixels.to(device))
    else:
        und = policy.encode_images(pixels.to(device))
    *_, answers = answer_questions(policy, und, [r["question"] for r in records], max_new_tokens=max_answer_tokens)
    return answers


# ------------------------------------------------------------------ summaries (pure)
def imbalance(judge_correct: list, self_correct: list, tags: list | None = None) -> dict:
    """Judge verdicts vs the model's own answers, image by image (two lists of bools, same order).

    judge_yes_self_no: the judge passes the image, the answer is not fully right ("t2i succeed, mmu fail").
    judge_no_self_yes: the judge fails the image, the answer is fully right. Fractions are of all n."""
    if len(judge_correct) != len(self_correct):
        raise ValueError(f"{len(judge_correct)} verdicts for {len(self_correct)} answers")
    pairs = [(bool(j), bool(s)) for j, s in zip(judge_correct, self_correct)]
    n = len(pairs)
    counts = {"both_yes": pairs.count((True, True)), "judge_yes_self_no": pairs.count((True, False)),
              "judge_no_self_yes": pairs.count((False, True)), "both_no": pairs.count((False, False))}
    result = {"n": n, **counts}
    for key in ("judge_yes_self_no", "judge_no_self_yes"):
        result[key + "_frac"] = counts[key] / n if n else None
    result["disagree_frac"] = (counts["judge_yes_self_no"] + counts["judge_no_self_yes"]) / n if n else None
    if tags is not None:
        result["per_tag"] = {}
        for tag in dict.fromkeys(tags):  # first-appearance order, as GenEval's table
            picked = [i for i, t in enumerate(tags) if t == tag]
            result["per_tag"][tag] = imbalance([judge_correct[i] for i in picked], [self_correct[i] for i in picked])
    return result


def summarize_rows(rows: list[dict]) -> dict:
    """Per-image rows {tag, prompt, [self_reward], [judge]} -> self-QA, judge (GenEval's summary), imbalance."""
    asked = [r for r in rows if r.get("self_reward") is not None]
    judged = [r for r in rows if r.get("judge") is not None]
    self_qa = judge = balance = None
    if asked:
        def stats(part):
            rewards = [r["self_reward"] for r in part]
            correct = sum(x == 1.0 for x in rewards)
            return {"n": len(part), "reward": float(np.mean(rewards)), "accuracy": correct / len(part), "correct": correct}

        per_tag = {tag: stats([r for r in asked if r["tag"] == tag]) for tag in dict.fromkeys(r["tag"] for r in asked)}
        self_qa = {**stats(asked), "accuracy_tag_mean": float(np.mean([s["accuracy"] for s in per_tag.values()])),
                   "per_tag": per_tag}
    if judged:
        judge = geneval.summarize([{"tag": r["tag"], "prompt": r["prompt"], "correct": r["judge"],
                                    "metadata": str(r.get("index", r["prompt"]))} for r in judged])  # prompt identity
    both = [r for r in judged if r.get("self_reward") is not None]
    if both:
        balance = imbalance([r["judge"] for r in both], [r["self_reward"] == 1.0 for r in both], [r["tag"] for r in both])
    return {"images": len(rows), "self_qa": self_qa, "judge": judge, "imbalance": balance}


def flat_metrics(result: dict, prefix: str = "eval/") -> dict:
    """evaluate_policy's result as flat floats for metrics.jsonl (absent parts are left out)."""
    m = {}
    if result.get("self_qa"):
        m[prefix + "self_qa_reward"], m[prefix + "self_qa_acc"] = result["self_qa"]["reward"], result["self_qa"]["accuracy"]
        for tag, s in result["self_qa"]["per_tag"].items():
            m[f"{prefix}self_qa_acc/{tag}"] = s["accuracy"]
    if result.get("judge"):
        m[prefix + "judge_acc"] = result["judge"]["overall"]  # GenEval's plain mean of the tag scores
        for tag, s in result["judge"]["tasks"].items():
            m[f"{prefix}judge_acc/{tag}"] = s["score"]
    if result.get("imbalance"):
        m[prefix + "judge_yes_self_no"] = result["imbalance"]["judge_yes_self_no_frac"]
        m[prefix + "judge_no_self_yes"] = result["imbalance"]["judge_no_self_yes_frac"]
    return m


def read_verdict(verdict) -> tuple[bool, str]:
    # a judge returns True/False or (correct, reason)
    return (bool(verdict[0]), str(verdict[1])) if isinstance(verdict, tuple) else (bool(verdict), "")


# ------------------------------------------------------------------ in memory, for training
@torch.no_grad()
def evaluate_policy(policy, records: list[dict], *, n_samples: int = 2, cfg_scale: float | None = None,
                    temperature: float = 1.0, seed: int = 0, judge=None, steps: int | None = None,
                    batch_size: int = 16, max_answer_tokens: int = 24) -> dict:
    """Evaluate a policy in memory (no files, no collectives); train.py calls it every k steps on a held-out set.

    n_samples images per record (image k of record i drawn as the export draws it, from (seed, i, k)),
    the model's greedy answer to each record's question, scored by reward.py. `judge(record, image) ->
    bool | (bool, reason)`, with `image` a PIL image, adds the judge's GenEval-style summary and the
    imbalance; the shapes world passes its exact judge, geneval_judge(scorer) wraps the built-in scorer.
    Returns {"images", "self_qa", "judge", "imbalance", "rows"}; flat_metrics(result) makes it loggable.
    Pass the unwrapped policy (not the DDP module); its train/eval mode is restored afterwards."""
    records = [prompts.add_questions(r) for r in records]  # GenEval's metadata lines work as they are
    cfg_scale = policy.default_cfg_scale if cfg_scale is None else cfg_scale
    jobs = [(i, k) for i in range(len(records)) for k in range(n_samples)]
    was_training, rows = policy.training, []
    policy.eval()
    try:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            image_ids, pixels = sample_images(policy, [r["prompt"] for r in records], batch, seed=seed,
                                              cfg_scale=cfg_scale, temperature=temperature, steps=steps)
            images = [to_pil(p) for p in pixels]  # 8-bit, as exported: model and judge see the same image
            answers = answer_images(policy, from_pil(images), [records[i] for i, _ in batch], max_answer_tokens,
                                    image_ids=image_ids)
            for (i, k), image, answer in zip(batch, images, answers):
                record = records[i]
                row = {"index": i, "sample": k, "tag": record["tag"], "prompt": record["prompt"], "answer": answer,
                       "self_reward": reward.score_answer(answer, record)}
                if judge is not None:
                    row["judge"], row["reason"] = read_verdict(judge(record, image))
                rows.append(row)
    finally:
        policy.train(was_training)
    return {**summarize_rows(rows), "rows": rows}


def geneval_judge(scorer):
    """A judge for evaluate_policy from geneval.GenEvalScorer."""
    def judge(record, image):
        metadata = {k: v for k, v in record.items() if k not in ("question", "answer")}
        result = scorer.score_image(image, metadata)
        return result["correct"], result["reason"]
    return judge


# ------------------------------------------------------------------ the GenEval folder
def sample_path(out: Path, i: int, k: int) -> Path:
    return out / f"{i:05d}" / "samples" / f"{k:04d}.png"


def prompt_complete(out: Path, i: int, n_samples: int) -> bool:
    return (out / f"{i:05d}" / "metadata.jsonl").is_file() and all(
        sample_path(out, i, k).is_file() for k in range(n_samples))


def write_prompt_folder(out: Path, i: int, line: str, pixels: list) -> None:
    """<out>/<i:05d>/ built under a temporary name GenEval skips (not all digits), then renamed into place."""
    final, tmp = out / f"{i:05d}", out / f".tmp-{i:05d}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a crash
    (tmp / "samples").mkdir(parents=True)
    (tmp / "metadata.jsonl").write_text(line + "\n", encoding="utf-8")  # json.load reads exactly one object
    for k, image in enumerate(pixels):
        to_pil(image).save(tmp / "samples" / f"{k:04d}.png")
    image_grid(torch.stack(pixels), columns=min(len(pixels), 4)).save(tmp / "grid.png")
    if final.exists():  # a half-done folder: regenerated whole (same seeds, so the same images)
        shutil.rmtree(final)
    os.replace(tmp, final)


def export_geneval(policy, texts, lines, out: Path, indices: list[int], cfg: Config, progress: bool) -> int:
    """Write every incomplete prompt folder among `indices`; returns how many were written."""
    from tqdm import tqdm

    cfg_scale = policy.default_cfg_scale if cfg.cfg_scale is None else cfg.cfg_scale
    for i in indices:  # temporary folders of a crashed run (GenEval would skip them, but they are clutter)
        shutil.rmtree(out / f".tmp-{i:05d}", ignore_errors=True)
    pending = [i for i in indices if not prompt_complete(out, i, cfg.n_samples)]
    jobs = [(i, k) for i in pending for k in range(cfg.n_samples)]
    images = {}  # prompt index -> its samples so far; a folder is written once all N exist
    bar = tqdm(total=len(jobs), disable=not progress, desc="geneval export", unit="img", dynamic_ncols=True)
    for start in range(0, len(jobs), cfg.batch_size):
        batch = jobs[start:start + cfg.batch_size]
        _, pixels = sample_images(policy, texts, batch, seed=cfg.seed, cfg_scale=cfg_scale,
                                  temperature=cfg.temperature, steps=cfg.steps)
        for (i, _), image in zip(batch, pixels):
            images.setdefault(i, []).append(image.cpu())
            if len(images[i]) == cfg.n_samples:
                write_prompt_folder(out, i, lines[i], images.pop(i))
        bar.update(len(batch))
    bar.close()
    return len(pending)


@torch.no_grad()
def analyze_folder(policy, scorer, judge, lines, records, out: Path, indices: list[int], cfg: Config,
                   progress: bool = False) -> list[dict]:
    """Self-QA and the built-in scorer's (or a judge's) verdicts on the saved PNGs of `indices`: the images
    GenEval sees, also for prompts exported by an earlier, interrupted run."""
    from tqdm import tqdm

    rows, items = [], [(i, k) for i in indices for k in range(cfg.n_samples)]
    needed = cfg.self_qa or scorer is not None or judge is not None  # else the rows only list the images
    for start in tqdm(range(0, len(items), cfg.batch_size), disable=not progress, desc="self-QA and scores",
                      unit="batch", dynamic_ncols=True):
        batch = items[start:start + cfg.batch_size]
        images = [Image.open(sample_path(out, i, k)).convert("RGB") for i, k in batch] if needed else []
        answers = [None] * len(batch)
        if cfg.self_qa:
            answers = answer_images(policy, from_pil(images), [records[i] for i, _ in batch], cfg.max_answer_tokens)
        for j, ((i, k), answer) in enumerate(zip(batch, answers)):
            row = {"index": i, "sample": k, "tag": records[i]["tag"], "prompt": records[i]["prompt"]}
            if answer is not None:
                row.update(answer=answer, self_reward=reward.score_answer(answer, records[i]))
            if scorer is not None:  # GenEval's per-image row, for results.jsonl
                result = scorer.score_image(images[j], json.loads(lines[i]))
                result.pop("detections")
                row["geneval"] = {"filename": str(sample_path(out, i, k)), **result}
                row["judge"] = result["correct"]
            elif judge is not None:
                row["judge"], row["reason"] = read_verdict(judge(records[i], images[j]))
            rows.append(row)
    return rows


def official_verdicts(path) -> dict:
    """{(prompt index, sample index): correct} from a results jsonl, keyed by .../<digits>/samples/<digits>.png."""
    verdicts = {}
    for row in geneval.read_official_results(path):
        match = re.search(r"(\d+)[/\\]samples[/\\](\d+)\.png$", str(row.get("filename", "")))
        if match:
            verdicts[int(match[1]), int(match[2])] = bool(row["correct"])
    return verdicts


# ------------------------------------------------------------------ what the numbers depend on
def file_sha256(path, digest=None):
    digest = digest or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest


def weights_sha256(folder) -> tuple[str, list[str]]:
    """sha256 over a folder's weight files (names and bytes, sorted); a ckpt's optimizer state is not weights."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                   and not p.name.startswith("optimizer"))
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(folder)).encode() + b"\0")
        file_sha256(p, digest)
    return digest.hexdigest(), [str(p.relative_to(folder)) for p in files]


def hub_revision(source: str | None) -> str | None:
    """The commit of a hub id's cached snapshot; None for local folders, or when nothing is cached."""
    if source is None or Path(source).is_dir():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")  # .../snapshots/<commit>/config.json
        return Path(cached).parent.name if isinstance(cached, str) else None
    except Exception:  # not a valid repo id, or no cache: nothing more to record
        return None


def describe_weights(source: str) -> dict:
    """A local folder is pinned by its weights' sha256, a hub id by its cached revision."""
    if Path(source).is_dir():
        sha, files = weights_sha256(source)
        return {"path": str(Path(source).resolve()), "sha256": sha, "files": files}
    return {"hub_id": source, "revision": hub_revision(source)}


def checkpoint_sha256(cfg: Config, policy) -> str:
    """The weights files' sha256; "built-in" for tiny presets built from a seed; else the loaded tensors'."""
    if cfg.model_path and Path(cfg.model_path).is_dir():
        return weights_sha256(cfg.model_path)[0]
    if cfg.model_path is None and cfg.model.endswith("-tiny"):
        return "built-in"
    digest = hashlib.sha256()
    for name, tensor in sorted(policy.state_dict().items()):
        digest.update(name.encode() + b"\0")
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "state-dict:" + digest.hexdigest()


def claim_folder(out: Path, pinned: dict) -> str:
    """Write export.json, or check that the folder's is the same; returns the problem, "" if none."""
    path = out / "export.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in pinned.items() if old.get(k) != v]
        return (f"--out {out} holds an export made with other settings ({'; '.join(changed)}): choose a new "
                f"--out, or delete the folder to regenerate") if changed else ""
    if out.is_dir() and any(p.name.isdigit() for p in out.iterdir()):
        return f"--out {out} holds prompt folders but no export.json (not written by evaluate.py): choose a new --out"
    from checkpoint import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(pinned, indent=1))
    return ""


def from_rank0(value):
    """Rank 0's value on every rank (so that all ranks stop together on a problem only rank 0 checked)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


# ------------------------------------------------------------------ during training (train.py --eval-every)
def held_out_eval(cfg, policy, held_out: list[dict]) -> dict:
    """Generation and self-QA on the held-out prompts, as flat `eval/...` numbers (rank 0's work)."""
    from parallel import barrier, full_params, is_main

    with full_params(policy):  # FSDP: every rank gathers; only rank 0 evaluates
        if not is_main():
            barrier()
            return {}
        if cfg.model.startswith("shapes-"):  # the world's exact judge, and understanding of true scenes
            from models.shapes_models import evaluate_world

            result = evaluate_world(policy, held_out, n_samples=cfg.eval_samples, cfg_scale=cfg.cfg_scale,
                                    temperature=cfg.temperature, seed=cfg.seed + 3)
            metrics = {f"eval/{k}": v for k, v in result.items() if k not in ("images", "seconds")}
        else:
            metrics = flat_metrics(evaluate_policy(
                policy, held_out, n_samples=cfg.eval_samples, cfg_scale=cfg.cfg_scale, temperature=cfg.temperature,
                seed=cfg.seed + 3, steps=cfg.timesteps, max_answer_tokens=cfg.max_answer_tokens))
        barrier()
    return metrics


def before_after(cfg, first: dict, last: dict) -> str:
    """The held-out evaluation at the start and at the end of the run, side by side."""
    if cfg.model.startswith("shapes-"):
        from models.shapes_models import format_table

        strip = lambda m: {k[len("eval/"):]: v for k, v in m.items() if k.startswith("eval/")}  # noqa: E731
        return format_table(strip(first), strip(last), names=(f"step {first['step']}", f"step {last['step']}"))
    keys = sorted(k for k in last if k.startswith("eval/") and k in first)
    rows = [f"| {k} | {first[k]:.3f} | {last[k]:.3f} | {last[k] - first[k]:+.3f} |" for k in keys]
    return "\n".join([f"| metric | step {first['step']} | step {last['step']} | change |", "|---|---:|---:|---:|", *rows])


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    from parallel import setup_distributed, teardown_distributed

    cfg = parse_config(argv)
    rank, world, device = setup_distributed(cfg.device)
    try:
        run(cfg, rank, world, device)
    finally:
        teardown_distributed()


def run(cfg: Config, rank: int, world: int, device: torch.device, judge=None) -> dict | None:
    """Export, score, self-QA, imbalance; rank 0 writes results.json and returns it. `judge` (code only)
    replaces the scorer: judge(record, image) -> bool | (bool, reason), as in evaluate_policy."""
    from checkpoint import atomic_write_text
    from models import load_policy
    from parallel import gather_lists, is_main, print0

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    metadata = validate(cfg)
    lines, records = read_metadata(metadata)
    if not records:
        raise ValueError(f"{metadata} holds no prompts")
    out = Path(cfg.out)
    scorer, scorer_name = None, "official" if cfg.official_results else ("judge" if judge else cfg.scorer)
    if scorer_name == "builtin":  # loaded first: a missing checkpoint fails before minutes of sampling
        try:
            scorer = geneval.GenEvalScorer.from_pretrained(cfg.detector, cfg.clip, device=str(device))
        except OSError as err:
            raise ValueError(f"cannot load the GenEval scorer (--detector {cfg.detector}, --clip {cfg.clip}): "
                             f"{str(err).rstrip('.')}. "
                             "Without hub access, download both elsewhere and pass the folders, or use --scorer none")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    policy = load_policy(cfg.model, cfg.model_path, device=device, dtype=dtype).eval()
    # an autoregressive sampler has no steps; a masked one records the steps it really uses
    steps = (cfg.steps or getattr(policy, "eval_timesteps", policy.default_timesteps)) if policy.decoding == "masked" else None
    if cfg.steps is not None and steps is None:
        print0(f"note: --steps is ignored, {cfg.model} decodes {policy.decoding!r}")
    cfg_scale = policy.default_cfg_scale if cfg.cfg_scale is None else cfg.cfg_scale
    pinned = None
    if is_main():  # what the images depend on; world size and batch size are deliberately absent
        pinned = {"model": cfg.model, "checkpoint_sha256": checkpoint_sha256(cfg, policy),
                  "metadata_sha256": file_sha256(metadata).hexdigest(), "n_samples": cfg.n_samples,
                  "cfg_scale": cfg_scale, "temperature": cfg.temperature, "steps": steps, "seed": cfg.seed,
                  "dtype": cfg.dtype}
    problem = from_rank0(claim_folder(out, pinned) if is_main() else None)
    if problem:
        raise ValueError(problem)
    mine = list(range(rank, len(records), world))  # prompt i goes to rank i % world
    print0(json.dumps(dataclasses.asdict(cfg), indent=1))
    print0(f"world {world} | prompts {len(records)} ({len(mine)} on rank 0) | images {len(records) * cfg.n_samples} | "
           f"decoding {policy.decoding} | cfg {cfg_scale} | scorer {scorer_name} | self-QA {cfg.self_qa}")
    written = export_geneval(policy, [r["prompt"] for r in records], lines, out, mine, cfg, progress=is_main())
    rows = analyze_folder(policy, scorer, judge, lines, records, out, mine, cfg, progress=is_main())
    rows, written = gather_lists(rows), sum(gather_lists([written]))
    if not is_main():
        return None
    rows.sort(key=lambda r: (r["index"], r["sample"]))
    scores = None
    if scorer is not None:  # GenEval's own per-image format, so summary_scores.py reads it too
        geneval.write_jsonl_atomic(out / "results.jsonl", [r["geneval"] for r in rows])
        scores = geneval.summarize([r["geneval"] for r in rows])
    if cfg.official_results:  # the official table is the file's own; the imbalance pairs it with our answers
        verdicts = official_verdicts(cfg.official_results)
        for row in rows:
            row["judge"] = verdicts.get((row["index"], row["sample"]))
        scores = geneval.summarize(geneval.read_official_results(cfg.official_results))
        missing = sum(r["judge"] is None for r in rows)
        if missing:
            print0(f"warning: {cfg.official_results} has no verdict for {missing} of {len(rows)} exported images")
    summary = summarize_rows([{k: v for k, v in r.items() if k != "geneval"} for r in rows])
    settings = record_settings(cfg, metadata, pinned, policy, scorer_name, device, world, out)
    result = {"settings": settings, "geneval": scores or summary["judge"], "self_qa": summary["self_qa"],
              "imbalance": summary["imbalance"], "prompts": len(records), "images": len(rows),
              "written_this_run": written}
    atomic_write_text(out / "results.json", json.dumps(result, indent=1))
    print0(format_report(result))
    print0(f"wrote {out / 'results.json'}")
    return result


def record_settings(cfg: Config, metadata: Path, pinned: dict, policy, scorer_name: str, device, world: int,
                    out: Path) -> dict:
    """Everything a reader needs to reproduce the numbers, for results.json."""
    import transformers

    width, height = Image.open(sample_path(out, 0, 0)).size
    builtin = scorer_name == "builtin"
    return {
        "benchmark": "geneval", "metadata": str(metadata), "metadata_sha256": pinned["metadata_sha256"],
        "model": cfg.model, "model_path": cfg.model_path,
        "checkpoint_sha256": pinned["checkpoint_sha256"], "model_hub_revision": hub_revision(cfg.model_path),
        "family": policy.family, "decoding": policy.decoding, "resolution": f"{width}x{height}",
        "num_image_tokens": policy.num_image_tokens, "n_samples": cfg.n_samples, "cfg_scale": pinned["cfg_scale"],
        "temperature": cfg.temperature, "steps": pinned["steps"], "seed": cfg.seed,
        "seeding": "image k of prompt i: generate.image_uniforms(seed, i, k), i.e. seed_for(seed, i, k)",
        "batch_size": cfg.batch_size, "dtype": cfg.dtype, "self_qa": cfg.self_qa,
        "answers": f"greedy, at most {cfg.max_answer_tokens} tokens", "scorer": scorer_name,
        "detector": describe_weights(cfg.detector) if builtin else None,
        "clip": describe_weights(cfg.clip) if builtin else None,
        "official_results": {"path": cfg.official_results, "sha256": file_sha256(cfg.official_results).hexdigest()}
        if cfg.official_results else None,
        "device": device_name(device), "world_size": world, "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "command": sys.argv,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def format_report(result: dict) -> str:
    """GenEval's table, then self-QA per tag, then the imbalance."""
    parts = [geneval.format_table(result["geneval"])] if result["geneval"] else ["GenEval: not scored"]
    if result["self_qa"]:
        s = result["self_qa"]
        lines = ["", "Self-QA (the model answers about its own images; reward.py)", "=" * 60]
        for tag, t in {**s["per_tag"], "overall": s}.items():
            lines.append(f"{tag:<16} reward {t['reward']:.3f}  accuracy {t['accuracy']:.2%} ({t['correct']} / {t['n']})")
        parts.append("\n".join(lines))
    if result["imbalance"]:
        b = result["imbalance"]
        parts.append(f"\nImbalance over {b['n']} judged images\n"
                     f"judge yes, self no: {b['judge_yes_self_no']} ({b['judge_yes_self_no_frac']:.2%})\n"
                     f"judge no, self yes: {b['judge_no_self_yes']} ({b['judge_no_self_yes_frac']:.2%})")
    return "\n".join(parts)


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
