"""Evaluation: GenEval export and scores, the model's self-QA on its own images, and the imbalance.

UniRL trains on the model's answers about its own images; GenEval judges the same images with a
detector. This file measures both on GenEval's prompts, for a preset, a released checkpoint or any
`ckpt-*` folder a run wrote (--shapes does the same in the shapes world; see evaluate_shapes):

  1. Export. --n-samples images per prompt of GenEval's evaluation_metadata.jsonl, in GenEval's own
     layout (<out>/00000/metadata.jsonl, <out>/00000/samples/0000.png, ...), so the official evaluator
     runs on the folder unchanged. Image k of prompt i draws from uniforms seeded on (seed, i, k): the
     same images on 1 or 8 GPUs and at any --batch-size. Re-running the same command resumes; a folder
     exported with other settings (export.json) is refused rather than mixed. geneval/export.py writes,
     reads back and pins the folder; this file decides what runs and summarizes it.
  2. Scores. geneval/'s transformers rebuild of GenEval (--scorer builtin, CPU or GPU), the official
     evaluator's results file (--official-results), or none. Printed as GenEval's summary table.
  3. Self-QA. The model answers each image's templated question (prompts.add_questions) about the saved
     PNG, greedily, and reward.py scores the answer: mean reward and accuracy (reward == 1) per tag.
  4. Imbalance. Over the images that have both a judge verdict and a self-QA answer:
         judge_yes_self_no   the judge passes the image, the model's own answer is not fully right
                             (UniRL's released code counts this one: "t2i succeed, mmu fail")
         judge_no_self_yes   the judge fails the image, the model's own answer is fully right
                             (the model sees what is not there: a reward that generation can fool)
     each as a count and as a fraction of all those images, overall and per tag.
  5. One record. results.json (written atomically) holds scores, self-QA, imbalance and every setting
     (hashes of the prompts, weights and scorer checkpoints, sampling settings, device, world size,
     versions, date); results.jsonl holds the built-in scorer's per-image rows in the official format.

Deliberate simplifications: answers are greedy with a fixed token cap; the scorer runs one image at a
time (as GenEval does).

Commands:
    python evaluate.py --model janus-tiny --geneval --out outputs/tiny --scorer none        # CPU, seconds
    python evaluate.py --model janus-pro-1b --model-path runs/x/ckpt-001000 --geneval \\
        --out outputs/x-geneval --detector DIR --clip DIR        # GenEval's prompts ship in data/
    torchrun --standalone --nproc_per_node 8 evaluate.py --model janus-pro-1b --geneval --out outputs/pro1b
    python evaluate.py ... --official-results outputs/x-geneval/official.jsonl   # after GenEval's own evaluator
    python evaluate.py --model shapes-janus --shapes --model-path runs/shapes-janus-grpo-<time>/ckpt-000300
In code, for train.py every k steps (no files, no collectives):
    result = evaluate_policy(policy, held_out, n_samples=2, cfg_scale=None, temperature=1.0, seed=0)
    log(flat_metrics(result))   # {"eval/self_qa_acc": ..., "eval/judge_acc": ..., ...}
    evaluate_world(policy, shapes.eval_records(16), seed=3)   # the shapes world: {"geneval": ..., "und": ..., ...}
Both run one loop, evaluate_samples; how images are drawn and judged, and whether true scenes exist, are its arguments.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import geneval
from support.cli import check_flags, given_flags, opt
import prompts
import reward
import shapes
from shapes import EVAL_PER_TAG  # a module-level name: the Config field `shapes` hides the module there
from geneval import DEFAULT_CLIP, DEFAULT_DETECTOR
from generate import rollout
from geneval.export import (analyze_folder, answer_images, claim_folder, decoding_steps, export_geneval,
                            find_metadata, from_pil, official_verdicts, pin_settings,
                            read_metadata, read_verdict, record_settings, sample_images, to_pil)


@dataclass
class Config:
    model: str = opt("janus-tiny", "preset, as in train.py (models/__init__.py PRESETS)")
    model_path: str | None = opt(None, "folder or hub id overriding the preset's weights (also a ckpt-* folder)")
    geneval: bool = opt(False, "export GenEval's prompts in its layout and score them (the benchmark to run)")
    metadata: str | None = opt(None, "GenEval metadata jsonl; default GenEval's 553 prompts shipped in "
                                     "data/geneval_metadata.jsonl")
    out: str | None = opt(None, "export folder; default outputs/<model>-geneval. The same command resumes it")
    n_samples: int = opt(4, "images per prompt (GenEval: 4)")
    batch_size: int = opt(16, "images per sampling call, and per self-QA batch")
    cfg_scale: float | None = opt(None, "classifier-free guidance; default the family's (Janus 5)")
    temperature: float = opt(1.0, "image-token sampling temperature (full softmax, as in training)")
    steps: int | None = opt(None, "decoding steps of masked (MaskGIT-style) families; unused by autoregressive ones")
    seed: int = opt(0, "image k of prompt i draws from uniforms seeded on (seed, i, k)")
    scorer: str = opt("builtin", "builtin (geneval/ on transformers) | none")
    detector: str = opt(DEFAULT_DETECTOR, "Mask2Former hub id or local folder for --scorer builtin")
    clip: str = opt(DEFAULT_CLIP, "CLIP hub id or local folder for --scorer builtin")
    official_results: str | None = opt(None, "results jsonl of GenEval's own evaluator on --out; replaces --scorer")
    self_qa: bool = opt(True, "the model answers each image's question (--no-self-qa skips it)")
    max_answer_tokens: int = opt(24, "cap on answer length; answers are greedy")
    device: str = opt("auto", "auto | cpu | cuda")
    dtype: str = opt("float32", "weights' dtype: float32 | bfloat16")
    threads: int = opt(0, "torch CPU threads per process; 0 leaves torch's default")
    kv_bucket: int = opt(128, "AR sampling: attention reads the filled KV slots rounded up to this many (0: all)")
    compile_decode: str = opt("off", "AR sampling: torch.compile the one-token step: off | default | reduce-overhead")
    shapes: bool = opt(False, "shapes-* models: the world's held-out prompts and exact judge, train.py's table; "
                              "unset flags take the settings of the run that wrote --model-path")
    per_tag: int = opt(EVAL_PER_TAG, "--shapes: held-out prompts per category, as train.py evaluates")


# What every number and path flag accepts (cli.check_flags, in validate() before anything loads): min / max
# inclusive, above / below exclusive; path: file | folder | out | model (cli.PATH_KINDS).
LIMITS = dict(
    model_path=dict(path="model"), metadata=dict(path="file"), out=dict(path="out"),
    official_results=dict(path="file"), detector=dict(path="model"), clip=dict(path="model"),
    n_samples=dict(min=1, max=9999),  # GenEval's sample names have four digits
    batch_size=dict(min=1), cfg_scale=dict(min=0), temperature=dict(min=0), steps=dict(min=1), seed=dict(min=0),
    max_answer_tokens=dict(min=1), threads=dict(min=0), kv_bucket=dict(min=0), per_tag=dict(min=1),
)


def parse_config(argv: list[str] | None = None) -> Config:
    """argparse built from the dataclass; unknown flags are errors."""
    return Config(**given_flags(Config, argv, __doc__.split("\n")[0]))


def validate(cfg: Config) -> Path | None:
    """Every bad input fails here, naming the fix, before a model loads. Returns the metadata path (GenEval)."""
    import os

    from models import check_cache_writable, check_model_name, check_sampling_flags

    cfg.out = cfg.out or f"outputs/{cfg.model}-{'shapes' if cfg.shapes else 'geneval'}"
    check_flags(cfg, LIMITS)
    check_model_name(cfg.model)
    check_sampling_flags(cfg.model, cfg.kv_bucket, cfg.compile_decode)
    check_cache_writable(cfg.model, cfg.model_path)  # e.g. the shapes base, pretrained first
    for name, allowed in {"scorer": ("builtin", "none"), "device": ("auto", "cpu", "cuda"),
                          "dtype": ("float32", "bfloat16")}.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"--{name} {getattr(cfg, name)!r}: choose one of {', '.join(allowed)}")
    if cfg.shapes:
        if not cfg.model.startswith("shapes-"):
            raise ValueError(f"--shapes evaluates the shapes world: use --model shapes-janus or shapes-showo, or "
                             f"--geneval for {cfg.model}")
        if cfg.geneval:
            raise ValueError("--shapes and --geneval are two different benchmarks: pass one of them")
        if "RANK" in os.environ:
            raise ValueError("--shapes runs in one process (seconds on a CPU): start it with python, not torchrun")
        return None
    if not cfg.geneval:
        raise ValueError("nothing to evaluate: pass --geneval (GenEval export + scores + self-QA), or --shapes for "
                         "a shapes-* model; other benchmarks call evaluate_policy from code")
    if cfg.model.startswith("shapes-"):
        raise ValueError(f"--geneval with {cfg.model}: GenEval's COCO prompts lie outside the shapes world's "
                         f"vocabulary and pictures; evaluate it with --shapes")
    return find_metadata(cfg.metadata)


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


# ------------------------------------------------------------------ in memory: the one evaluation loop
@torch.no_grad()
def evaluate_samples(policy, records: list[dict], *, n_samples: int, batch_size: int, draw, judge=None,
                     true_scenes=None, max_answer_tokens: int = 24) -> tuple[list[dict], list[bool] | None]:
    """Draw, judge, answer, score: the loop of evaluate_policy (real models) and evaluate_world (the shapes world).

    What differs between the worlds comes in as arguments:
      draw(jobs) -> (image ids (B, T), pixels (B, 3, H, W) in [0, 1]): image k of record i, for each job (i, k)
      judge(record, image) -> bool | (bool, reason), on the 8-bit PIL image; None: no verdicts
      true_scenes(first, chunk) -> pixels (C, 3, H, W): a scene that satisfies each record of the chunk
          records[first:first + C]; None where no true scene exists (real prompts)
    Images go `batch_size` per draw, true scenes `batch_size // n_samples` records per chunk.
    Returns one row per image, {index, sample, tag, prompt, answer, self_reward[, judge, reason]} in (record, sample)
    order, and with true_scenes, whether the greedy answer about each record's true scene is fully right.
    Pass the unwrapped policy (not the DDP module); its train/eval mode is restored afterwards."""
    jobs = [(i, k) for i in range(len(records)) for k in range(n_samples)]
    was_training, rows, understood = policy.training, [], []
    policy.eval()
    try:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            image_ids, pixels = draw(batch)
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
        if true_scenes is not None:  # understanding alone: the same questions about pictures that are right
            per_chunk = max(1, batch_size // n_samples)
            for first in range(0, len(records), per_chunk):
                chunk = records[first:first + per_chunk]
                # no image ids: a true scene is an outside picture, which the model encodes from its pixels
                answers = answer_images(policy, true_scenes(first, chunk), chunk, max_answer_tokens)
                understood += [s == 1.0 for s in reward.score_answers(answers, chunk)]
    finally:
        policy.train(was_training)
    return rows, (understood if true_scenes is not None else None)


def evaluate_policy(policy, records: list[dict], *, n_samples: int = 2, cfg_scale: float | None = None,
                    temperature: float = 1.0, seed: int = 0, judge=None, steps: int | None = None,
                    batch_size: int = 16, max_answer_tokens: int = 24) -> dict:
    """Evaluate a policy in memory (no files, no collectives); train.py calls it every k steps on a held-out set.

    n_samples images per record (image k of record i drawn as the export draws it, from (seed, i, k)),
    the model's greedy answer to each record's question, scored by reward.py. `judge(record, image) ->
    bool | (bool, reason)`, with `image` a PIL image, adds the judge's GenEval-style summary and the
    imbalance; geneval_judge(scorer) wraps the built-in scorer. The loop is evaluate_samples.
    Returns {"images", "self_qa", "judge", "imbalance", "rows"}; flat_metrics(result) makes it loggable.
    Pass the unwrapped policy (not the DDP module); its train/eval mode is restored afterwards."""
    records = [prompts.add_questions(r) for r in records]  # GenEval's metadata lines work as they are
    cfg_scale = policy.default_cfg_scale if cfg_scale is None else cfg_scale
    texts = [r["prompt"] for r in records]
    draw = lambda jobs: sample_images(policy, texts, jobs, seed=seed, cfg_scale=cfg_scale,  # noqa: E731
                                      temperature=temperature, steps=steps)
    rows, _ = evaluate_samples(policy, records, n_samples=n_samples, batch_size=batch_size, draw=draw, judge=judge,
                               max_answer_tokens=max_answer_tokens)
    return {**summarize_rows(rows), "rows": rows}


def geneval_judge(scorer):
    """A judge for evaluate_policy from geneval.GenEvalScorer."""
    def judge(record, image):
        metadata = {k: v for k, v in record.items() if k not in ("question", "answer")}
        result = scorer.score_image(image, metadata)
        return result["correct"], result["reason"]
    return judge


# ------------------------------------------------------------------ in memory, the shapes world
EVAL_STEP = -1  # evaluation draws its images at a "step" no training run reaches: never a training image's stream
TRUE_SCENE_SEED = 1_000_003  # the true scenes of records[first:] draw from seed * this + first


def judge_world(record, image) -> tuple[bool, str]:
    """The shapes world's exact judge on a picture: parse the pixels back to the board, then GenEval's rules."""
    return shapes.judge(record, shapes.parse_image(image))  # the judge sees pixels only, as GenEval does


def evaluate_world(policy, records: list[dict], *, n_samples: int = 4, cfg_scale: float | None = None,
                   temperature: float = 1.0, timesteps: int | None = None, seed: int = 0,
                   batch_images: int = 128, max_answer_tokens: int = 16) -> dict:
    """Score a policy in the shapes world. Every number is a share in [0, 1].

    For each record the policy draws `n_samples` images (CFG `cfg_scale`, default the family's, at
    `temperature`; Show-o decodes in `timesteps` steps, default the family's), and answers the record's
    question about each of them (greedy). It also answers the question about one true scene per record,
    drawn by shapes.sample_scene from `seed`. The loop is evaluate_samples, with the exact judge.

    Returns
      geneval/<tag>, geneval    the exact judge's pass rate per tag; overall = mean of the tag scores (GenEval's)
      self_qa/<tag>, self_qa    share of its own images whose answer is fully right (reward 1), as train.py logs it
      self_reward               mean partial-credit reward (reward.py) on its own images
      und/<tag>, und            share of true scenes answered fully right: understanding alone
      imbalance                 share of its images where the judge and its own answer disagree, split as
      imbalance/judge_only        the judge passes the image but the answer is wrong (reward left on the table)
      imbalance/answer_only       the judge fails the image but the answer is right (a reward the image did not earn)
      images, seconds
    """
    t0 = time.perf_counter()
    cfg = cfg_scale if cfg_scale is not None else policy.default_cfg_scale

    def draw(jobs):
        # As a training rollout draws (the evaluation step's streams, indexed by i * n_samples + k; Show-o in its
        # training steps), not as the GenEval export does: the world's tables were all measured this way.
        i, k = jobs[0]
        ro = rollout(policy, [records[j] for j, _ in jobs], 1, seed=seed, step=EVAL_STEP,
                     first_index=i * n_samples + k, cfg_scale=cfg, temperature=temperature, timesteps=timesteps)
        return ro.image_ids, ro.pixels  # exact palette colours: the loop's 8-bit round trip leaves them as they are

    def true_scenes(first, chunk):
        rng = random.Random(seed * TRUE_SCENE_SEED + first)
        return shapes.render_tensor(torch.stack([shapes.sample_scene(r, rng) for r in chunk]))

    # whole groups per draw: the batches, so the numbers, stay those of one rollout per chunk of records
    batch = max(1, batch_images // n_samples) * n_samples
    rows, und_correct = evaluate_samples(policy, records, n_samples=n_samples, batch_size=batch, draw=draw,
                                         judge=judge_world, true_scenes=true_scenes,
                                         max_answer_tokens=max_answer_tokens)
    passed = [r["judge"] for r in rows]
    rewards = [r["self_reward"] for r in rows]
    correct = [s == 1.0 for s in rewards]
    tags = [r["tag"] for r in rows]

    def share(flags, keep=None):
        flags = [f for i, f in enumerate(flags) if keep is None or keep[i]]
        return sum(flags) / max(len(flags), 1)

    out = {}
    present = [t for t in shapes.TAGS if t in tags]
    record_tags = [r["tag"] for r in records]
    for tag in present:
        out[f"geneval/{tag}"] = share(passed, [t == tag for t in tags])
        out[f"self_qa/{tag}"] = share(correct, [t == tag for t in tags])
        out[f"und/{tag}"] = share(und_correct, [t == tag for t in record_tags])
    out["geneval"] = sum(out[f"geneval/{t}"] for t in present) / len(present)  # GenEval: mean of the tags
    out["self_qa"] = share(correct)
    out["self_reward"] = sum(rewards) / len(rewards)
    out["und"] = share(und_correct)
    out["imbalance/judge_only"] = share([p and not c for p, c in zip(passed, correct)])
    out["imbalance/answer_only"] = share([c and not p for p, c in zip(passed, correct)])
    out["imbalance"] = out["imbalance/judge_only"] + out["imbalance/answer_only"]
    out["images"] = len(passed)
    out["seconds"] = time.perf_counter() - t0
    return out


TABLE_ROWS = ([(f"geneval/{t}", f"judge: {t}") for t in shapes.TAGS] + [("geneval", "**judge: overall (GenEval)**")]
              + [("und", "understanding of true scenes"), ("self_qa", "self-QA accuracy (own images)"),
                 ("imbalance/judge_only", "imbalance: judge yes, answer no"),
                 ("imbalance/answer_only", "imbalance: judge no, answer yes")])


def format_scores(result: dict, name: str = "score") -> str:
    """One `evaluate_world` result as a markdown table, one row per metric."""
    rows = [f"| {label} | {result[key]:.3f} |" for key, label in TABLE_ROWS if key in result]
    return "\n".join([f"| metric | {name} |", "|---|---:|", *rows])


def format_table(before: dict, after: dict, names: tuple[str, str] = ("before", "after")) -> str:
    """Two `evaluate_world` results as a markdown table: one row per metric, with the change."""
    lines = [f"| metric | {names[0]} | {names[1]} | change |", "|---|---:|---:|---:|"]
    for key, label in TABLE_ROWS:
        if key in before and key in after:
            lines.append(f"| {label} | {before[key]:.3f} | {after[key]:.3f} | {after[key] - before[key]:+.3f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ during training (train.py --eval-every)
HELD_OUT_SEED_OFFSET = 3  # held-out images draw from seed + 3, apart from the rollouts' and answers' streams


def held_out_eval(cfg, policy, held_out: list[dict]) -> dict:
    """Generation and self-QA on the held-out prompts, as flat `eval/...` numbers (rank 0's work)."""
    from support.parallel import barrier, full_params, is_main

    with full_params(policy):  # FSDP: every rank gathers; only rank 0 evaluates
        if not is_main():
            barrier()
            return {}
        if cfg.model.startswith("shapes-"):  # the world's exact judge, and understanding of true scenes
            result = evaluate_world(policy, held_out, n_samples=cfg.eval_samples, cfg_scale=cfg.cfg_scale,
                                    temperature=cfg.temperature, timesteps=cfg.timesteps,
                                    seed=cfg.seed + HELD_OUT_SEED_OFFSET, max_answer_tokens=cfg.max_answer_tokens)
            metrics = {f"eval/{k}": v for k, v in result.items() if k not in ("images", "seconds")}
        else:
            metrics = flat_metrics(evaluate_policy(
                policy, held_out, n_samples=cfg.eval_samples, cfg_scale=cfg.cfg_scale, temperature=cfg.temperature,
                seed=cfg.seed + HELD_OUT_SEED_OFFSET, steps=cfg.timesteps, max_answer_tokens=cfg.max_answer_tokens))
        barrier()
    return metrics


def before_after(cfg, first: dict, last: dict) -> str:
    """The held-out evaluation at the start and at the end of the run, side by side."""
    if cfg.model.startswith("shapes-"):
        strip = lambda m: {k[len("eval/"):]: v for k, v in m.items() if k.startswith("eval/")}  # noqa: E731
        return format_table(strip(first), strip(last), names=(f"step {first['step']}", f"step {last['step']}"))
    keys = sorted(k for k in last if k.startswith("eval/") and k in first)
    rows = [f"| {k} | {first[k]:.3f} | {last[k]:.3f} | {last[k] - first[k]:+.3f} |" for k in keys]
    return "\n".join([f"| metric | step {first['step']} | step {last['step']} | change |", "|---|---:|---:|---:|", *rows])


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    from support.parallel import setup_distributed, teardown_distributed

    given = given_flags(Config, argv, __doc__.split("\n")[0])
    cfg = Config(**given)
    if cfg.shapes:  # the small world evaluates in one process, in seconds
        evaluate_shapes(cfg, set(given))
        return
    rank, world, device = setup_distributed(cfg.device)
    try:
        run(cfg, rank, world, device)
    finally:
        teardown_distributed()


# ------------------------------------------------------------------ the shapes world (--shapes)
# evaluate_world's keyword -> (train.py's setting that its held-out evaluation passes there, this file's flag)
SHAPES_SETTINGS = {"n_samples": ("eval_samples", "n_samples"), "cfg_scale": ("cfg_scale", "cfg_scale"),
                   "temperature": ("temperature", "temperature"), "timesteps": ("timesteps", "steps"),
                   "max_answer_tokens": ("max_answer_tokens", "max_answer_tokens"), "seed": ("seed", "seed")}


def shapes_settings(cfg: Config, given: set) -> dict:
    """evaluate_world's settings: train.py's for this preset, then those of the run that wrote --model-path
    (its trainer_state.json), then the flags given here. So a run's last checkpoint reproduces the last
    column of the table that run printed."""
    from support.checkpoint import read_trainer_state

    run_cfg = {"seed": 0, **shapes.TRAIN_DEFAULTS[cfg.model]}  # train.py's preset for the world (seed: its default)
    if cfg.model_path and (Path(cfg.model_path) / "trainer_state.json").is_file():
        run_cfg.update(read_trainer_state(cfg.model_path)["config"])
    settings = {key: run_cfg[name] for key, (name, _) in SHAPES_SETTINGS.items()}
    settings["seed"] += HELD_OUT_SEED_OFFSET  # train.py's held-out images draw from their own seed
    settings.update({key: getattr(cfg, flag) for key, (_, flag) in SHAPES_SETTINGS.items() if flag in given})
    return settings


def evaluate_shapes(cfg: Config, given: set) -> dict:
    """The shapes world's held-out evaluation of a checkpoint: the exact judge per category, self-QA,
    understanding of true scenes and the imbalance (evaluate_world). Writes
    <out>/results.json atomically and prints the table."""
    from support.checkpoint import atomic_write_text
    from models import load_policy, set_sampling
    from support.parallel import setup_distributed

    validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _, _, device = setup_distributed(cfg.device)  # one process: no process group, just the device
    settings = shapes_settings(cfg, given)
    policy = load_policy(cfg.model, cfg.model_path, device=device,
                         dtype={"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype])
    set_sampling(policy, cfg.kv_bucket, cfg.compile_decode)
    result = evaluate_world(policy, shapes.eval_records(cfg.per_tag), **settings)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"settings": {"model": cfg.model, "model_path": cfg.model_path, "per_tag": cfg.per_tag, **settings},
              "scores": {k: v for k, v in result.items() if k not in ("images", "seconds")},
              "images": result["images"]}
    atomic_write_text(out / "results.json", json.dumps(record, indent=1))
    print(format_scores(result, name=Path(cfg.model_path).name if cfg.model_path else cfg.model))
    print(f"{result['images']} images in {result['seconds']:.1f}s; wrote {out / 'results.json'}")
    return record


def run(cfg: Config, rank: int, world: int, device: torch.device, judge=None) -> dict | None:
    """Export, score, self-QA, imbalance; rank 0 writes results.json and returns it. `judge` (code only)
    replaces the scorer: judge(record, image) -> bool | (bool, reason), as in evaluate_policy."""
    from support.checkpoint import atomic_write_text
    from models import load_policy, set_sampling
    from support.parallel import from_rank0, gather_lists, is_main, print0

    metadata = validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
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
    set_sampling(policy, cfg.kv_bucket, cfg.compile_decode)
    steps = decoding_steps(policy, cfg.steps)  # recorded as the sampler really runs: None when autoregressive
    if cfg.steps is not None and steps is None:
        print0(f"note: --steps is ignored, {cfg.model} decodes {policy.decoding!r}")
    cfg_scale = policy.default_cfg_scale if cfg.cfg_scale is None else cfg.cfg_scale
    # rank 0 pins what the images depend on (export.json) and checks an existing folder; all ranks stop on a problem
    pinned = pin_settings(cfg, policy, metadata, cfg_scale, steps) if is_main() else None
    problem = from_rank0(claim_folder(out, pinned) if is_main() else None)
    if problem:
        raise ValueError(problem)
    mine = list(range(rank, len(records), world))  # prompt i goes to rank i % world
    print0(json.dumps(dataclasses.asdict(cfg), indent=1))
    print0(f"world {world} | prompts {len(records)} ({len(mine)} on rank 0) | images {len(records) * cfg.n_samples} | "
           f"decoding {policy.decoding} | cfg {cfg_scale} | scorer {scorer_name} | self-QA {cfg.self_qa}")
    written = export_geneval(policy, [r["prompt"] for r in records], lines, out, mine, cfg, cfg_scale, is_main())
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
    from support.parallel import end_worker

    end_worker()  # under torchrun: skip the interpreter teardown that can abort a finished rank
