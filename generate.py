"""Stage 1 of a UniRL iteration: the rollout. The policy draws G images for each prompt.

For an autoregressive family (Janus) the loop below is the whole sampler, written out so that a reader
sees the algorithm rather than a call into `generate()`:

    rows  = [cond prompts; uncond prompts]                   both CFG branches in one batch
    prefill the rows into a KV cache allocated once (no copying as it grows)
    for t in 0..T-1:
        logits = guide(cond, uncond, s) / temperature       the distribution we sample from
        token  = inverse-CDF sample with this image's own uniform u[t]
        feed the token to both branches, one step of the cache

What it simplifies on purpose: no top-k or top-p (the original Janus samples the full softmax, and GRPO
needs the distribution it sampled from to be the one whose log-probs it trains on).

Randomness. Every image owns a stream of uniforms from a `torch.Generator` seeded on (seed, step, the
image's global index), and the token is the inverse CDF of the softmax at that uniform. This is exact
categorical sampling, and it makes a run independent of how images are split over ranks and batches:
1 GPU and 8 GPUs draw the same images, which is what lets the tests compare a DDP run with a
one-process run. (A generator per (seed, rank, step) would tie the samples to the world size.)

Run it alone:  python generate.py --model janus-tiny --prompt "a photo of two cats" --out grid.png
"""

from __future__ import annotations

import argparse
import hashlib
import math
from dataclasses import dataclass, field

import torch


@dataclass
class Rollout:
    """Everything one iteration produces about its images, prompt-major: rows p0 x G, then p1 x G, ..."""

    records: list[dict]  # N = P * G records, each image's prompt record (with question and answer)
    prompt_ids: torch.Tensor  # (N, L) left-padded t2i prompts
    prompt_mask: torch.Tensor  # (N, L)
    image_ids: torch.Tensor  # (N, T) sampled image tokens
    pixels: torch.Tensor  # (N, 3, H, W) decoded images in [0, 1]
    und_images: torch.Tensor | None = None  # what the policy's understanding path reads
    question_ids: torch.Tensor | None = None  # (N, Lq) left-padded questions
    question_mask: torch.Tensor | None = None
    answer_ids: torch.Tensor | None = None  # (N, A) the model's own answers, right-padded, with EOS
    answer_mask: torch.Tensor | None = None
    answers: list[str] = field(default_factory=list)
    votes: list[list[str]] | None = None  # --answer-reward agreement: more sampled answers per image
    rewards: torch.Tensor | None = None  # (N,) in [0, 1]
    commit_steps: torch.Tensor | None = None  # (N, T) masked decoding: the step that committed each token
    first_index: int = 0  # this rank's first image in the global batch (seeds depend on it)


def seed_for(*parts: int) -> int:
    """A 63-bit seed mixed from integers, e.g. (seed, step, image index). Stable across runs and machines."""
    digest = hashlib.sha256(("-".join(str(int(p)) for p in parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def image_uniforms(seed: int, step: int, first_index: int, count: int, length: int) -> torch.Tensor:
    """(count, length) uniforms: row i is image (first_index + i)'s own stream at this step."""
    rows = []
    for i in range(first_index, first_index + count):
        gen = torch.Generator().manual_seed(seed_for(seed, step, i))
        # float64, as the CDF it is compared with: float32 uniforms come in steps of 2^-24, too coarse for rare tokens
        rows.append(torch.rand(length, generator=gen, dtype=torch.float64))
    return torch.stack(rows)


def group_uniforms(seed: int, first_index: int, groups: int, prompts_per_step: int, group_size: int) -> torch.Tensor:
    """(groups, group_size) uniforms for the groups from image `first_index` on: their rows of one draw over the
    step's whole batch, so a draw does not depend on the number of ranks (train.py's random shares of the answers)."""
    whole = torch.rand(prompts_per_step, group_size, generator=torch.Generator().manual_seed(seed))
    row = first_index // group_size
    return whole[row: row + groups]


def sample_tokens(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) by inverse CDF; temperature 0 is argmax.

    logits (B, K), uniforms (B,) in [0, 1) -> ids (B,)
    """
    if temperature == 0:
        return logits.argmax(-1)
    cdf = torch.softmax(logits.double() / temperature, -1).cumsum(-1)  # float64 so the tail is exact
    # right=True: the first token whose cdf exceeds u, so a token of probability 0 (a masked-out answer token)
    # is never drawn, not even at u = 0
    ids = torch.searchsorted(cdf, uniforms.to(cdf).reshape(-1, 1).contiguous(), right=True).squeeze(-1)
    # past the end only when the last cdf entry rounded to just below u: take the most likely token then
    return torch.where(ids < logits.shape[-1], ids, logits.argmax(-1))


@torch.no_grad()
def sample_images_ar(policy, prompt_ids, prompt_mask, uniforms, *, cfg_scale=None, temperature=1.0) -> torch.Tensor:
    """Autoregressive rollout with a KV cache and CFG batched: ids (N, L) -> image tokens (N, T)."""
    n, length = prompt_ids.shape
    steps = policy.num_image_tokens
    rows, mask = prompt_ids, prompt_mask
    if cfg_scale is not None:  # [cond; uncond]: one forward per step serves both branches
        rows = torch.cat([prompt_ids, policy.uncond_prompt_ids(prompt_ids)])
        mask = torch.cat([prompt_mask, prompt_mask])  # the uncond rows keep the cond rows' length and left padding
    # allocated once for the prompt and every image token: no copy as it grows, fixed addresses
    cache = policy.new_cache(rows.shape[0], length + steps)
    logits = policy.gen_step(cache, mask, prompt_ids=rows)  # prefill: (B, K) for token 0
    tokens = prompt_ids.new_empty(n, steps)
    for t in range(steps):
        guided = logits if cfg_scale is None else policy.guide(logits[:n], logits[n:], cfg_scale)
        tokens[:, t] = sample_tokens(guided, uniforms[:, t], temperature)
        if t + 1 == steps:  # the last token is never fed back: no logits are needed after it
            break
        # (B, L + t + 1): the token fed now is a key every later step attends to
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        feed = tokens[:, t].repeat(rows.shape[0] // n)  # the same token goes to both branches
        logits = policy.gen_step(cache, mask, image_ids=feed)
    return tokens


@torch.no_grad()
def sample_images_masked(policy, prompt_ids, generators, *, cfg_scale=None, timesteps=18, temperature=1.0,
                         reuse_prefix=True):
    """Show-o's MaskGIT-style parallel decoding, exactly as the original `t2i_generate` does it.

    generators: one torch.Generator for the batch (the original's draws: one multinomial over all rows,
    then one uniform [B, N]) or a list, one per row (each row then draws as the original does at batch 1,
    independent of its batch). Returns the tokens (N, T) and the step that committed each (N, T).

    The original's quirks, kept on purpose so that a generator gives the original's tokens:
    - no temperature on the logits: tokens are drawn from the guided softmax itself; the temperature only
      scales the Gumbel noise of the confidence ranking, and it compounds: tau <- tau * (1 - (s+1)/T);
    - mask_len = floor(N * cos(pi/2 * (s+1)/T)) counts ALL N tokens, clamped to [1, unknown - 1];
    - the last step still re-masks one token, yet returns its sampled value (its commit step is T-1).
    """
    n, length = prompt_ids.shape[0], policy.num_image_tokens
    mask = policy.mask_code
    codes = torch.full((n, length), mask, dtype=torch.long, device=prompt_ids.device)
    # (N, T); a token still masked before the last step is committed at T - 1
    commit = torch.full_like(codes, timesteps - 1)
    tau = temperature
    per_row = isinstance(generators, (list, tuple))
    # the prompt's keys and values do not change between steps: compute them once (reuse_prefix=False: every step)
    prefix = policy.prefix_cache(prompt_ids, cfg_scale) if reuse_prefix and hasattr(policy, "prefix_cache") else None
    for s in range(timesteps):
        probs = torch.softmax(policy.masked_logits(prompt_ids, codes, cfg_scale, prefix), -1)  # (N, T, K)
        if per_row:
            sampled = torch.stack([torch.multinomial(probs[i], 1, generator=g)[:, 0] for i, g in enumerate(generators)])
        else:
            sampled = torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=generators).view(n, length)
        unknown = codes == mask
        # committed tokens keep their value; only masked ones take the new draw
        sampled = torch.where(unknown, sampled, codes)
        ratio = (s + 1) / timesteps
        keep_masked = torch.floor(length * torch.cos(torch.tensor(ratio) * math.pi * 0.5))  # the cosine schedule
        keep_masked = torch.clamp(torch.minimum(unknown.sum(-1, keepdim=True) - 1, keep_masked.long()), min=1)
        confidence = probs.gather(-1, sampled[..., None])[..., 0]
        confidence = torch.where(unknown, confidence, torch.finfo(torch.float32).max)  # known: never re-masked
        tau = tau * (1 - ratio)  # compounds, as in the original
        if per_row:
            u = torch.stack([torch.zeros(length, device=codes.device).uniform_(0, 1, generator=g) for g in generators])
        else:
            u = torch.zeros(n, length, device=codes.device).uniform_(0, 1, generator=generators)
        # Gumbel(0, 1) from the uniforms; the clamps keep both logs finite at u = 0 and u = 1
        gumbel = -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))
        confidence = torch.log(confidence.clamp(min=1e-20)) + tau * gumbel
        cut = torch.sort(confidence, -1).values.gather(-1, keep_masked)  # the keep_masked-th lowest
        # the keep_masked least confident tokens go back to [MASK] (strict <, as the original)
        remask = confidence < cut
        commit = torch.where(unknown & ~remask, s, commit)  # masked before this step and kept now: committed at step s
        codes = torch.where(remask, mask, sampled)
    return sampled, commit


def row_generators(seed: int, step: int, first_index: int, count: int, device) -> list:
    """One generator per image, seeded on (seed, step, global image index)."""
    return [torch.Generator(device=device).manual_seed(seed_for(seed, step, i)) for i in range(first_index, first_index + count)]


def rollout(policy, records: list[dict], group_size: int, *, seed: int, step: int, first_index: int,
            cfg_scale: float | None, temperature: float = 1.0, timesteps: int | None = None) -> Rollout:
    """G images for each record. `first_index` is this rank's first image in the global batch."""
    device = next(policy.parameters()).device
    records = [r for r in records for _ in range(group_size)]  # prompt-major
    prompt_ids, prompt_mask = policy.tokenize_gen_prompts([r["prompt"] for r in records])
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    commit = None
    if policy.decoding == "ar":
        uniforms = image_uniforms(seed, step, first_index, len(records), policy.num_image_tokens).to(device)
        image_ids = sample_images_ar(policy, prompt_ids, prompt_mask, uniforms, cfg_scale=cfg_scale,
                                     temperature=temperature)
    elif policy.decoding == "masked":
        generators = row_generators(seed, step, first_index, len(records), device)
        image_ids, commit = sample_images_masked(policy, prompt_ids, generators, cfg_scale=cfg_scale,
                                                 timesteps=timesteps or policy.default_timesteps,
                                                 temperature=temperature)
    else:
        raise ValueError(f"no sampler for decoding {policy.decoding!r}")
    pixels = policy.decode_images(image_ids)
    return Rollout(records, prompt_ids, prompt_mask, image_ids, pixels, commit_steps=commit, first_index=first_index)


def image_grid(pixels: torch.Tensor, columns: int):
    """Pixels (N, 3, H, W) in [0, 1] -> one PIL image, `columns` per row (a group per row reads well)."""
    from PIL import Image

    n, _, h, w = pixels.shape
    rows = (n + columns - 1) // columns
    grid = torch.ones(3, rows * (h + 2), columns * (w + 2))
    for i in range(n):
        r, c = divmod(i, columns)
        grid[:, r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = pixels[i].float().cpu()
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(array)


def main() -> None:
    from models import load_policy

    ap = argparse.ArgumentParser(description="Sample images for one prompt and save them as a grid.")
    ap.add_argument("--model", default="janus-tiny")
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--prompt", default="a photo of two cats")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--cfg-scale", type=float, default=None)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="grid.png")
    args = ap.parse_args()
    policy = load_policy(args.model, args.model_path).eval()
    cfg = args.cfg_scale if args.cfg_scale is not None else policy.default_cfg_scale
    ro = rollout(policy, [{"prompt": args.prompt}], args.n, seed=args.seed, step=0, first_index=0, cfg_scale=cfg,
                 temperature=args.temperature)
    image_grid(ro.pixels, args.n).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
