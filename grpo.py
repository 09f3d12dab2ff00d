"""Stage 4b of a UniRL iteration: GRPO on the model's own images and answers.

Each image i of a group gets the advantage A_i of its self-QA reward (reward.group_advantages). The
same A_i is shared by every token the sample produced: its T image tokens (`--grpo-on gen`), its
answer tokens (`und`), or both (`both`, the paper's final "mmu_t2i" run). Per token t:

    ratio_t = exp(logp_t - old_logp_t)
    loss_t  = -min(ratio_t * A, clip(ratio_t, 1 - eps, 1 + eps) * A) + beta * KL_t
    KL_t    = exp(ref_logp_t - logp_t) - (ref_logp_t - logp_t) - 1          (k3, >= 0)

and the loss is the token mean within each sample, then the mean over samples (DeepSeekMath's form).

Decisions a reader will ask about:
- mu (`--inner-iters`) = 1 is the default. Then the ratio is exactly 1 at the update and clipping never
  acts: GRPO is plain policy gradient with a group baseline. For mu > 1, old_logp comes from one
  teacher-forced no-grad pass before the first update (not from the sampler's numbers), so the ratio
  starts at exactly 1 even in bf16.
- Under CFG, which distribution enters the ratio is `--ratio-dist`. `guided` (default) is the one the
  sampler drew from, so the importance ratio is a true ratio of sampling probabilities. `cond` trains
  the conditional model alone (T2I-R1's choice) and halves the cost, but its "ratio" is then not the
  sampling distribution's.
- beta defaults to 0.2: the released Show-o GRPO run is named `..._beta_0_2_...`. beta = 0 drops the
  reference model and its memory.
- For a masked-decoding family (Show-o) "the log-prob of an image token" has no single meaning, so
  `--estimator` chooses (see `remask_positions` and models/showo_policy.py):
    remask (default): re-mask the finished image at one random ratio shared by the group, and score
      the masked tokens given the visible ones: log p(x_i | prompt, x_visible), Show-o's own training
      objective. One pass. The ratio compares the new and old denoiser on the same masked input and
      the KL is their drift there: a surrogate, since the sampler drew x_i from a different state.
      UniRL's code changed Show-o's masking to one ratio per batch, which only matters for this use.
    trajectory: score each token under the sampler's state at the step that committed it (Mask-GRPO).
      These are exactly the sampling-time log-probs, so the ratio is a true importance ratio of the
      value draws and the KL is measured along the trajectory; which tokens were kept (the confidence
      ranking) is not scored. It costs one pass per sampler step.
- Tokens are scored at the temperature they were sampled at: image tokens at `--temperature`
  (autoregressive families), answer tokens at `--answer-temperature`. Greedy answers (0) were drawn from
  no distribution; their log-prob is the policy's untempered one (temperature 1).
- The k3 KL's value estimates KL(pi || ref), but as a per-token loss its expected gradient is that of
  KL(ref || pi) (worked out in `kl_k3`); both vanish at pi = ref and agree to first order near it.
- Zero-variance groups (all images equally good) get advantage 0. They still count in the mean over
  samples, which dilutes the signal a little; their share is logged as `zero_var_frac`.
"""

from __future__ import annotations

import math

import torch

from generate import seed_for


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at the taken ids. logits (N, T, K), ids (N, T) -> (N, T)."""
    logp = torch.log_softmax(at_least_fp32(logits) / temperature, -1)
    return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits are upcast before any softmax (log-probs drift by ~1e-3 otherwise); fp64 stays."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over mask == 1 (over `dim`, or everything); empty rows give 0, not NaN."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def clipped_surrogate(logp, old_logp, advantages, clip_eps: float):
    """PPO's clipped objective per token, as a loss. logp, old_logp (N, T); advantages (N,).

    loss_t = -min(r_t A, clip(r_t, 1-eps, 1+eps) A), r_t = exp(logp_t - old_logp_t).
    Returns (loss (N, T), clipped (N, T) bool: tokens whose gradient the clip removed).
    """
    # (N, T). With old_logp = logp.detach() (mu = 1) its value is exactly 1 but its gradient is d logp, so the loss's
    # gradient is -A d logp: plain policy gradient
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    # clipped < unclipped only when the ratio left [1-eps, 1+eps] in the direction A favours: min() then takes the
    # clamped term, whose gradient is 0
    return -torch.minimum(unclipped, clipped), clipped < unclipped


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || ref) per token: exp(d) - d - 1 with d = ref_logp - logp; >= 0.

    Its VALUE is unbiased for samples x ~ pi: E_pi[ref/pi - log(ref/pi) - 1] = 1 + KL(pi || ref) - 1.
    Its GRADIENT, as used here (a per-token loss on tokens sampled from pi_old and held fixed, no score
    term; DeepSeekMath's and TRL's form) is per token d k3 = (1 - ref/pi) d log pi. At pi = pi_old (the
    first update, all of it when mu = 1) its expectation is E_pi[d log pi] - sum_x ref(x) d log pi(x)
    = -E_ref[d log pi] = d KL(ref || pi): the gradient of the other direction, not that of KL(pi || ref),
    which is E_pi[log(pi/ref) d log pi]. The two agree to first order as pi -> ref. Each is per position,
    given the sampled prefix: how pi changes which prefixes are visited is not differentiated either.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def policy_term(logp, old_logp, ref_logp, advantages, mask, clip_eps: float, beta: float):
    """The GRPO loss of one token stream (image tokens or answer tokens), with its statistics.

    All (N, T) except advantages (N,). ref_logp may be None when beta = 0.
    Returns (scalar loss = mean over samples of the token mean, stats dict).
    """
    # Positions outside the mask (an answer's padded tail) are set to 0 first: their log-probs may be -inf (PAD
    # is not an answer token, and its restricted logit over a temperature below 1 overflows), and -inf - -inf
    # would put a NaN into the forward and, through the ratio's exp, into every gradient.
    keep = mask.bool()
    logp, old_logp = torch.where(keep, logp, 0.0), torch.where(keep, old_logp, 0.0)
    ref_logp = torch.where(keep, ref_logp, 0.0) if ref_logp is not None else None
    loss, clipped = clipped_surrogate(logp, old_logp, advantages, clip_eps)
    kl = kl_k3(logp, ref_logp) if ref_logp is not None else torch.zeros_like(logp)
    per_sample = masked_mean(loss + beta * kl, mask, dim=1)  # (N,) token mean within each sample
    stats = {
        "kl": masked_mean(kl, mask).item(),
        "clip_frac": masked_mean(clipped.float(), mask).item(),
        "ratio": masked_mean(torch.exp(logp - old_logp), mask).item(),
    }
    return per_sample, stats


def grpo_step_loss(out: dict, batch: dict, old: dict, ref: dict | None, advantages: torch.Tensor, cfg,
                   temperature: float = 1.0, answer_temperature: float = 1.0,
                   und_advantages: torch.Tensor | None = None) -> tuple:
    """The micro-batch loss from one policy.forward output.

    out:   the forward's logits; batch: its inputs and masks, with a "gen" / "und" key for each token stream
    that trains (under --couple the forward also computes generation logits that no term scores);
    old / ref: no-grad log-probs of the same tokens ("gen", "und" keys) or None; advantages (n,);
    temperature: the one the image tokens were sampled at (autoregressive families; Show-o draws from the
    untempered softmax, so 1 there); answer_temperature: the answers' (1 for greedy answers);
    und_advantages: the answer tokens' own advantages (--answer-reward agreement), else the image's.
    Returns (per-sample loss (n,), stats).
    """
    total, stats = 0.0, {}
    if "gen" in batch:
        logp = token_logprobs(out["gen_logits"], batch["gen"]["image_ids"], temperature)
        mask = batch["gen"].get("token_mask", torch.ones_like(logp))  # masked decoding: the scored tokens
        old_logp = old["gen"] if old is not None else logp.detach()  # mu = 1: ratio is exactly 1
        term, s = policy_term(logp, old_logp, ref["gen"] if ref else None, advantages, mask, cfg.clip_eps, cfg.kl_beta)
        total = total + term
        stats.update({f"gen_{k}": v for k, v in s.items()})
        stats["gen_entropy"] = entropy(out["gen_logits"], mask, temperature)
    if "und" in batch:
        # the ratio, the score and the KL all use the distribution the answers were drawn from
        logp = token_logprobs(out["und_logits"], batch["und"]["answer_ids"], answer_temperature)
        mask = batch["und"]["answer_mask"]
        old_logp = old["und"] if old is not None else logp.detach()
        und_adv = advantages if und_advantages is None else und_advantages
        term, s = policy_term(logp, old_logp, ref["und"] if ref else None, und_adv, mask, cfg.clip_eps, cfg.kl_beta)
        total = total + cfg.und_weight * term  # 1: UniRL's sum (train.py --und-weight)
        stats.update({f"und_{k}": v for k, v in s.items()})
    return total, stats


def remask_positions(seed: int, step: int, first_image: int, num_images: int, group_size: int,
                     length: int) -> torch.Tensor:
    """The re-mask estimator's masks: (num_images, length) bool, True = masked and scored.

    One ratio t ~ U(0, 1) per group -> cos(pi/2 t) of the tokens masked (at least 1), at random
    positions per image. Seeded on global group and image indices, so every rank and every pass
    (old, reference, current) uses the same masks.
    """
    rows = []
    for i in range(first_image, first_image + num_images):
        # tags 7 and 8 keep these streams apart from the sampler's seed_for(seed, step, i); no rank enters the seed
        group = torch.Generator().manual_seed(seed_for(seed, step, i // group_size, 7))
        # MaskGIT's cosine schedule; at least one token, so no image's loss is empty
        count = max(1, round(length * math.cos(math.pi / 2 * torch.rand(1, generator=group).item())))
        image = torch.Generator().manual_seed(seed_for(seed, step, i, 8))
        # a random permutation: its first `count` positions are masked
        order = torch.rand(length, generator=image).argsort()
        rows.append(torch.zeros(length, dtype=torch.bool).index_fill(0, order[:count], True))
    return torch.stack(rows)


def trajectory_subset(commit_steps: torch.Tensor, k: int, seed: int, step: int) -> torch.Tensor:
    """The trajectory estimator on k of the sampler's steps (0 = all): (N, T) bool of the tokens scored.

    Each chosen step costs one forward pass, so k trades variance for compute (Mask-GRPO scores one)."""
    total = int(commit_steps.max()) + 1
    if k <= 0 or k >= total:
        return torch.ones_like(commit_steps, dtype=torch.bool)
    # seeded on (seed, step) alone: every rank and every pass (old, reference, current) scores the same steps.
    # Index -1 is no image's: the sampler's streams are seed_for(seed, step, i) with i >= 0
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(seed_for(seed, step, -1)))[:k]
    return torch.isin(commit_steps, chosen.to(commit_steps.device))


@torch.no_grad()
def entropy(logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean per-token entropy of softmax(logits / T) over mask: a collapse detector for the log."""
    logp = torch.log_softmax(logits.float() / temperature, -1)
    return masked_mean(-(logp.exp() * logp).sum(-1), mask).item()


@torch.no_grad()
def sample_logprobs(policy, batch: dict, temperature: float = 1.0, answer_temperature: float = 1.0) -> dict:
    """No-grad teacher-forced log-probs of the batch's trained tokens under `policy` (for old and ref),
    at the temperatures they were sampled at (see grpo_step_loss)."""
    out = policy(gen=batch.get("gen"), und=batch.get("und"))
    logps = {}
    if "gen_logits" in out:
        logps["gen"] = token_logprobs(out["gen_logits"], batch["gen"]["image_ids"], temperature)
    if "und_logits" in out:
        logps["und"] = token_logprobs(out["und_logits"], batch["und"]["answer_ids"], answer_temperature)
    return logps
