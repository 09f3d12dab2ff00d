"""Pretraining a small base model for the shapes world, from scratch, on rendered ground truth.

UniRL starts from a pretrained unified model that draws and reads, imperfectly. The shapes world
(shapes/__init__.py) makes its own: a tiny real Janus or Show-o (shapes/models.py) learns, from random weights,

- text to image: the NLL of a true scene's 16 cell codes given the prompt, through `policy(gen=...)`.
  Janus (autoregressive) is teacher-forced on all 16. Show-o (masked decoding) gets its own objective:
  a random share of the codes, cos(pi/2 u) with u ~ U(0, 1), is replaced by [MASK] and only those are
  scored (`masked_positions`). With probability `cfg_dropout` (10%, the usual rate: LlamaGen trains
  with 0.1) a prompt is replaced by the unconditional one (`policy.uncond_prompt_ids`), so the CFG branch that
  sampling subtracts is a trained model of "any scene", not noise;
- question answering: the NLL of the true answer about a rendered true scene, through
  `policy(und=...)`, the model reading the rendered pixels its own way (Janus: its SigLIP encoder; Show-o:
  the codes the codec parses from them, as `policy.encode_images` gives). Answers name objects in
  raster order (shapes.scene_answer), so they are a function of the image.

Both losses come from one forward call on the same scenes, for every record tag. The run is short on
purpose: the base should draw and count imperfectly, so that self-improvement has something to fix,
while reading well enough for its own answers to be a useful reward. It uses only the policy contract,
so another family needs only a builder in shapes/models.py (and, if it decodes some other way,
a line in `pretrain` saying which image tokens it scores).

The result is cached: `--model shapes-janus` (or `shapes-showo`) without `--model-path` loads
`$UNIRL_CACHE/shapes/<family>-<hash of these settings>` (default ~/.cache/unirl), pretraining it first if
it is missing; the family is part of the hash, so each family has its own base. Run it alone:

    python -m shapes.pretrain --seed 0                        # the default base: fills the cache, prints an evaluation
    python -m shapes.pretrain --family showo                  # the same for Show-o (about 90 s on one core)
    python -m shapes.pretrain --seed 1 --out bases/seed1      # another base; then train.py --model-path bases/seed1
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import shapes
from shapes.models import BUILDERS, FAMILIES, LOADERS
from support.checkpoint import fsync_dir, new_folder, settle_tree
from support.cli import check_flags, opt, writable_folder_problem
from support.parallel import rank0_fills

VERSION = 1  # bump when a change here alters what a given config trains: old caches are then ignored


@dataclass
class PretrainConfig:
    family: str = opt("janus", "model family of the base (shapes/models.py BUILDERS)")
    seed: int = opt(0, "seeds the weights, the records, the scenes and the CFG dropout")
    hidden: int = opt(64, "width of the language model")
    layers: int = opt(2, "language-model layers")
    vocab_size: int = opt(512, "BPE vocabulary cap (the world's text needs ~450)")
    steps: int = opt(1000, "optimizer steps; short on purpose, so the base leaves room to improve")
    batch: int = opt(32, "scenes per step; each one trains both generation and understanding")
    lr: float = opt(3e-3, "AdamW peak learning rate, after warm-up, cosine-decayed to a tenth")
    beta2: float = opt(0.95, "AdamW beta2. Not torch's 0.999: that remembers the huge first gradients for thousands "
                             "of steps and stalls the slow part, learning to read one cell among 16 (measured)")
    warmup: int = opt(50, "linear warm-up steps")
    cfg_dropout: float = opt(0.1, "share of prompts replaced by the unconditional one (trains the CFG branch)")
    und_weight: float = opt(1.0, "weight of the answer NLL against the image-token NLL")
    num_records: int = opt(2000, "size of the record pool the scenes are drawn for")

    def key(self) -> str:
        """A short hash of every setting and VERSION: the cache folder's name."""
        text = json.dumps({**dataclasses.asdict(self), "version": VERSION}, sort_keys=True)
        return f"{self.family}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass
class PretrainRun:
    """The flags that do not change what is trained (so they stay out of PretrainConfig.key())."""
    out: str | None = opt(None, "write the base here instead of the cache")
    threads: int = opt(0, "torch CPU threads; 0 leaves torch's default")
    eval_per_tag: int = opt(8, "evaluation records per tag afterwards; 0 skips it")


# What every number and path flag accepts (cli.check_flags, in validate() before any pretraining): min / max
# inclusive, above / below exclusive; path: out = a folder this run creates or writes into.
LIMITS = dict(
    seed=dict(min=0), hidden=dict(min=8), layers=dict(min=1), vocab_size=dict(min=1), steps=dict(min=1),
    batch=dict(min=1), lr=dict(above=0), beta2=dict(min=0, below=1), warmup=dict(min=0),
    cfg_dropout=dict(min=0, below=1),  # 1 would never show the model a prompt
    und_weight=dict(min=0), num_records=dict(min=1),
    out=dict(path="out"), threads=dict(min=0), eval_per_tag=dict(min=0),
)


def validate(cfg: PretrainConfig, run: PretrainRun) -> None:
    """Every bad flag fails here, in one line, before minutes of pretraining; so does a folder we cannot write."""
    check_flags(cfg, LIMITS)
    check_flags(run, LIMITS)
    if cfg.family not in BUILDERS:
        raise ValueError(f"--family {cfg.family!r}: choose one of {', '.join(BUILDERS)}")
    if cfg.hidden % 8:
        raise ValueError(f"--hidden {cfg.hidden}: use a multiple of 8 (4 attention heads, each of an even width "
                         f"for the rotary embeddings)")
    if run.out is not None:
        out = Path(run.out)
        if out.exists() and not (out / "pretrain_config.json").exists():  # save_base would refuse it at the end
            raise ValueError(f"--out {run.out} exists and is not a pretrained shapes base: choose another --out")
        return
    folder = base_folder(cfg)
    problem = None if (folder / "config.json").exists() else writable_folder_problem(folder)
    if problem:
        raise ValueError(f"UNIRL_CACHE: the base is cached at {folder}, but {problem} (UNIRL_CACHE sets the "
                         f"cache's place; or pass --out)")


def world_batch(policy, records: list[dict], codes: torch.Tensor, drop: torch.Tensor,
                token_mask: torch.Tensor | None = None) -> dict:
    """Forward inputs for true scenes `codes` (B, T) of `records`; `drop` (B,) bool: prompt -> unconditional.
    token_mask (B, T) bool, masked decoding only: the image tokens hidden from the input and scored."""
    device = next(policy.parameters()).device
    prompt_ids, prompt_mask = policy.tokenize_gen_prompts([r["prompt"] for r in records])
    prompt_ids = torch.where(drop[:, None], policy.uncond_prompt_ids(prompt_ids), prompt_ids)
    question_ids, question_mask = policy.tokenize_und_prompts([r["question"] for r in records])
    answer_ids, answer_mask = policy.tokenize_answers([shapes.scene_answer(r, c) for r, c in zip(records, codes)])
    images = policy.encode_images(shapes.render_tensor(codes).to(device))  # the model reads the rendered pixels
    to = lambda t: t.to(device)
    gen = dict(prompt_ids=to(prompt_ids), prompt_mask=to(prompt_mask), image_ids=to(codes), cfg_scale=None)
    if token_mask is not None:
        gen["token_mask"] = to(token_mask)
    return {"gen": gen,
            "und": dict(images=images, prompt_ids=to(question_ids), prompt_mask=to(question_mask),
                        answer_ids=to(answer_ids), answer_mask=to(answer_mask))}


def pretrain_loss(policy, batch: dict, und_weight: float) -> tuple[torch.Tensor, dict]:
    """gen NLL (mean over the scored image tokens) + und_weight * answer NLL (mean over answer tokens).

    Scored: all T tokens for an autoregressive family (each given the ones before it), the masked ones for
    a masked family (each given the visible ones): Show-o's own masked-token objective."""
    from sft import token_nll

    out = policy(gen=batch["gen"], und=batch["und"])
    image_ids = batch["gen"]["image_ids"]
    scored = batch["gen"].get("token_mask", torch.ones_like(image_ids, dtype=torch.bool))
    gen_nll = token_nll(out["gen_cond_logits"], image_ids, scored).mean()  # conditional model
    und_nll = token_nll(out["und_logits"], batch["und"]["answer_ids"], batch["und"]["answer_mask"]).mean()
    return gen_nll + und_weight * und_nll, {"gen_nll": gen_nll.item(), "und_nll": und_nll.item()}


def masked_positions(rng: random.Random, batch: int, length: int) -> torch.Tensor:
    """Show-o's training masks (B, T) bool, True = masked: a ratio r = cos(pi/2 u), u ~ U(0, 1), per scene,
    round(r T) tokens (at least 1) at random positions. The cosine schedule the sampler decodes with, so
    training sees every masking level the sampler passes through, mostly the heavily masked early ones."""
    rows = torch.zeros(batch, length, dtype=torch.bool)
    for row in rows:
        count = max(1, round(length * math.cos(math.pi / 2 * rng.random())))
        row[rng.sample(range(length), count)] = True
    return rows


def learning_rate(cfg: PretrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay from lr to lr / 10."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(cfg: PretrainConfig, log_every: int = 50) -> tuple[torch.nn.Module, list[dict]]:
    """Build a random-weight base of `cfg.family` and train it on true scenes. Returns (policy, history)."""
    policy = BUILDERS[cfg.family](seed=cfg.seed, hidden=cfg.hidden, layers=cfg.layers, vocab_size=cfg.vocab_size)
    policy.train()
    records = shapes.make_shape_records(cfg.num_records, seed=cfg.seed)
    rng = random.Random(cfg.seed)  # records, scenes, the dropout and Show-o's masks all come from this one stream
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=0.0)
    history, t0 = [], time.perf_counter()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        chosen = [rng.choice(records) for _ in range(cfg.batch)]
        codes = torch.stack([shapes.sample_scene(r, rng) for r in chosen])  # (B, T) true scenes
        drop = torch.tensor([rng.random() < cfg.cfg_dropout for _ in chosen])
        hidden = masked_positions(rng, cfg.batch, policy.num_image_tokens) if policy.decoding == "masked" else None
        loss, stats = pretrain_loss(policy, world_batch(policy, chosen, codes, drop, hidden), cfg.und_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        history.append({"step": step + 1, "loss": loss.item(), **stats, "seconds": time.perf_counter() - t0})
        if log_every and ((step + 1) % log_every == 0 or step + 1 == cfg.steps):
            h = history[-1]
            print(f"pretrain step {h['step']:5d} | gen nll {h['gen_nll']:.3f} | und nll {h['und_nll']:.3f} | "
                  f"{h['seconds']:.0f}s", flush=True)
    return policy.eval(), history


def save_base(policy, cfg: PretrainConfig, history: list[dict], folder: str | os.PathLike, replace: bool = True) -> Path:
    """Write the base to `folder` atomically (a temporary sibling, then a rename), with its settings.

    An existing base there is replaced (or, with replace=False, kept: another process finished first);
    any other existing folder is refused."""
    folder = Path(folder)
    if folder.exists() and not (folder / "pretrain_config.json").exists():
        raise ValueError(f"{folder} exists and is not a pretrained shapes base: choose another --out")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_folder(folder.parent, f".{folder.name}.tmp-")  # a group-readable cache (mkdtemp would make it 0700)
    policy.save(tmp)
    (tmp / "pretrain_config.json").write_text(json.dumps({**dataclasses.asdict(cfg), "version": VERSION}, indent=1))
    (tmp / "pretrain_history.json").write_text(json.dumps(history))
    settle_tree(tmp)  # on disk before the rename publishes it
    if folder.exists():
        if not replace:
            shutil.rmtree(tmp)
            return folder
        shutil.rmtree(folder)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process renamed its copy in between (a second run, or a machine sharing the cache)
        shutil.rmtree(tmp)
        if replace or not (folder / "config.json").exists():
            raise
    fsync_dir(folder.parent)
    return folder


def base_folder(cfg: PretrainConfig) -> Path:
    """Where the cache keeps the base for `cfg` (UNIRL_CACHE, default ~/.cache/unirl)."""
    from models.janus import cache_dir

    return cache_dir() / "shapes" / cfg.key()


def cached_base(cfg: PretrainConfig) -> Path:
    """The folder of the pretrained base for `cfg`, pretraining and caching it if it is missing."""
    folder = base_folder(cfg)
    if (folder / "config.json").exists():
        print(f"shapes world: loading the cached {cfg.family} base {folder}", flush=True)
        return folder
    print(f"shapes world: no cached base at {folder}; pretraining one ({cfg.steps} steps, seed {cfg.seed}, "
          f"a few CPU minutes, once)", flush=True)
    policy, history = pretrain(cfg)
    save_base(policy, cfg, history, folder, replace=False)  # another machine sharing the cache may finish first
    print(f"shapes world: base cached at {folder} ({history[-1]['seconds']:.0f}s)", flush=True)
    return folder


# ------------------------------------------------------------------ the preset loader (models.PRESETS)
def load_shapes_policy(name: str, path: str | None = None, dtype=torch.float32):
    """The `shapes-*` preset loader: `path` (a folder written by `policy.save`) or the cached base."""
    if name not in FAMILIES:
        raise ValueError(f"unknown shapes preset {name!r}: choose one of {', '.join(FAMILIES)}")
    family = FAMILIES[name]
    if path is None:
        path = str(shared_cached_base(family))
    return LOADERS[family](path, dtype=dtype)


def cache_to_fill(name: str, path: str | None) -> Path | None:
    """models.cache_to_fill for the shapes world: the base's cache folder when it must be pretrained first."""
    return base_to_fill(FAMILIES[name]) if path is None else None


def base_to_fill(family: str) -> Path | None:
    """The cache folder the base of `family` would be pretrained into, or None when it is cached already."""
    folder = base_folder(PretrainConfig(family=family))
    return None if (folder / "config.json").exists() else folder


def shared_cached_base(family: str) -> Path:
    """The cached base, pretrained once under torchrun: rank 0 fills the cache while the other ranks wait, then
    they all read it (support.parallel.rank0_fills)."""
    cfg = PretrainConfig(family=family)
    folder = base_folder(cfg)
    rank0_fills(folder, lambda: cached_base(cfg),
                how_to_share="point UNIRL_CACHE at a folder every machine shares, or run `python -m shapes.pretrain "
                             f"--family {family}` once on each machine first")
    return folder


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(PretrainConfig) + dataclasses.fields(PretrainRun):
        ap.add_argument("--" + f.name.replace("_", "-"), type=str if f.default is None else type(f.default),
                        default=f.default, help=f"{f.metadata['help']} (default {f.default})")
    args = vars(ap.parse_args(argv))
    run = PretrainRun(**{f.name: args.pop(f.name) for f in dataclasses.fields(PretrainRun)})
    cfg = PretrainConfig(**args)
    validate(cfg, run)
    if run.threads:
        torch.set_num_threads(run.threads)
    print(json.dumps(dataclasses.asdict(cfg), indent=1))
    if run.out is None:
        folder = cached_base(cfg)
    else:
        policy, history = pretrain(cfg)
        folder = save_base(policy, cfg, history, run.out)
        print(f"wrote {folder} ({history[-1]['seconds']:.0f}s)")
    if run.eval_per_tag:
        from evaluate import evaluate_world  # the one evaluation loop, above this world

        policy = LOADERS[cfg.family](str(folder))
        result = evaluate_world(policy, shapes.eval_records(run.eval_per_tag), seed=cfg.seed)
        print(json.dumps({k: round(v, 3) for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
