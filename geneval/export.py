"""The GenEval folder of an evaluation: images written in GenEval's layout, read back, and pinned.

evaluate.py's `run` (python evaluate.py --geneval) drives this file; each part also works on its own:

  1. Export. find_metadata and read_metadata locate and read GenEval's evaluation_metadata.jsonl;
     export_geneval writes --n-samples images per prompt:
         <out>/00000/metadata.jsonl      the prompt's metadata line, verbatim: one JSON object
         <out>/00000/samples/0000.png    sample 0 ... N-1
         <out>/00000/grid.png            all N side by side (for eyes; GenEval ignores it)
     so the official evaluator runs on the folder unchanged. Image k of prompt i draws from uniforms
     seeded on (seed, i, k) (sample_images): the same images on 1 or 8 GPUs and at any --batch-size (up
     to the floating-point noise between batch shapes, which can flip a near-tied token on a GPU).
  2. Read back. analyze_folder opens the saved PNGs, the images GenEval sees: the model answers each
     one's question (answer_images; reward.py scores the answer), and the built-in scorer or a judge
     gives its verdict. official_verdicts reads GenEval's own results file instead.
  3. Pin. claim_folder writes export.json, what the images depend on (pin_settings); record_settings
     gathers every setting results.json records: hashes of the prompt file, the weights and the scorer's
     checkpoints, sampling settings, device, versions, date.

Resume: re-running the same command skips every prompt folder that holds metadata.jsonl and all N
samples; each folder is written under a temporary name and renamed, so none is ever half-written. A
folder exported with other settings (export.json differs) is refused rather than mixed.

sample_images and answer_images also serve evaluate.evaluate_policy, the in-memory evaluation during
training, so its images are drawn and questioned exactly as the exported ones (answer_images serves the
loop of both worlds' in-memory evaluation, evaluate.evaluate_samples).
    _, pixels = sample_images(policy, texts, [(i, k)], seed=0, cfg_scale=5.0, temperature=1.0)
    to_pil(pixels[0])   # the same image as sample_path(out, i, k) of an export with these settings
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import geneval
import prompts
import reward
from generate import image_grid, image_uniforms, row_generators, sample_images_ar, sample_images_masked
from understand import answer_questions

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def find_metadata(path: str | None) -> Path:
    """--metadata, else GenEval's prompt file shipped in data/."""
    if path:
        if not Path(path).is_file():
            raise ValueError(f"--metadata {path}: no such file")
        return Path(path)
    found = prompts.find_geneval_metadata()
    if found is None:
        raise ValueError(f"{prompts.GENEVAL_METADATA} is missing: restore it (git checkout -- data/) or pass "
                         "--metadata PATH (GenEval's prompts/evaluation_metadata.jsonl, github.com/djghosh13/geneval)")
    return Path(found)


def read_metadata(path) -> tuple[list[str], list[dict]]:
    """The raw lines (written verbatim into the export) and the records with question and answer added."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]  # read_records skips blank lines the same way
    return lines, prompts.read_records(path)


# ------------------------------------------------------------------ images and answers
def decoding_steps(policy, steps: int | None) -> int | None:
    """The steps a masked (MaskGIT-style) sampler really runs: `steps`, else the family's evaluation default.
    None for an autoregressive sampler, which has no steps."""
    if policy.decoding != "masked":
        return None
    return steps or getattr(policy, "eval_timesteps", policy.default_timesteps)


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
                                            timesteps=decoding_steps(policy, steps))
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


def read_verdict(verdict) -> tuple[bool, str]:
    # a judge returns True/False or (correct, reason)
    return (bool(verdict[0]), str(verdict[1])) if isinstance(verdict, tuple) else (bool(verdict), "")


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


def export_geneval(policy, texts, lines, out: Path, indices: list[int], cfg: "evaluate.Config", cfg_scale: float,
                   progress: bool) -> int:
    """Write every incomplete prompt folder among `indices`, with guidance `cfg_scale` (the family's default
    already filled in); returns how many were written."""
    from tqdm import tqdm

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
def analyze_folder(policy, scorer, judge, lines, records, out: Path, indices: list[int], cfg: "evaluate.Config",
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


def checkpoint_sha256(cfg: "evaluate.Config", policy) -> str:
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


def pin_settings(cfg: "evaluate.Config", policy, metadata: Path, cfg_scale: float, steps: int | None) -> dict:
    """What the images depend on, for export.json. World size and batch size are deliberately absent:
    image k of prompt i is the same whichever rank draws it, in whichever batch."""
    return {"model": cfg.model, "checkpoint_sha256": checkpoint_sha256(cfg, policy),
            "metadata_sha256": file_sha256(metadata).hexdigest(), "n_samples": cfg.n_samples,
            "cfg_scale": cfg_scale, "temperature": cfg.temperature, "steps": steps, "seed": cfg.seed,
            "dtype": cfg.dtype}


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
    from support.checkpoint import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(pinned, indent=1))
    return ""


def device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def record_settings(cfg: "evaluate.Config", metadata: Path, pinned: dict, policy, scorer_name: str, device, world: int,
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
