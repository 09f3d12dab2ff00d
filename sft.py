"""Stage 4a of a UniRL iteration: supervised fine-tuning on the model's own images.

Two losses, chosen with `--sft-on gen|und|both`:

- Understanding SFT: the NLL of the prompt's TRUE answer, given the model's own image and the question.
  Every image counts: the record knows what the image was meant to show.
- Generation SFT: the NLL of the model's own image tokens, under the conditional (no-CFG) model, for
  the images that its self-QA scored best: the best of their group, and at least `--sft-min-reward`
  (reward-filtered behaviour cloning). The loss is averaged over ALL images of the batch with the
  dropped ones weighted 0, so it splits over ranks and micro-batches exactly. For Show-o it is the masked-token
  objective: the image is re-masked (`token_mask`) and only the hidden tokens are scored.

End-to-end coupling (`--couple`): the understanding pass does not read the decoded image but one made
from straight-through one-hot image tokens of the generation logits. Forward, it is exactly the
rollout's image; backward, d(answer loss)/d(image) flows into the generation logits through the
relaxed softmax. This is UniRL's Straight-Through Gumbel-Softmax (ST-GS) path; the paper's tau is not
known, 1 is our default (the Show-o-derived code that uses the same helper calls tau = 1). Coupling adds
no loss term: `--sft-on` / `--grpo-on` alone decide which terms exist. With `und`, the answer loss then
also reaches generation; with `gen` alone there is no answer loss to carry, and train.py refuses it.

Our ST-GS draws the Gumbel noise *conditioned on the token the sampler already drew*, so the hard
one-hot is the rollout's token and the soft part is a correct Gumbel-softmax relaxation of that very
sample (top-down Gumbel sampling: the winner's perturbed logit is Gumbel(logsumexp z); each other
perturbed logit is a Gumbel(z_i) truncated below it). A plain `gumbel_softmax` would draw a new token.
The estimator itself (models/common.py, straight_through_onehot) runs inside the policy's forward; this file
draws its noise (coupling_uniforms).
"""

from __future__ import annotations

import torch

from generate import seed_for
from grpo import masked_mean, token_logprobs


def token_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean NLL over mask: -mean_t log p(ids_t). logits (N, T, K) -> (N,)."""
    return masked_mean(-token_logprobs(logits, ids), mask, dim=1)


def select_best(rewards: torch.Tensor, min_reward: float) -> torch.Tensor:
    """Which images to imitate: the best of their group and at least min_reward. (P, G) -> bool (P, G)."""
    # ties: every image at its group's best reward is imitated
    best = rewards == rewards.max(dim=1, keepdim=True).values
    return best & (rewards >= min_reward)


def coupling_uniforms(seed: int, step: int, image_ids: torch.Tensor, idx: torch.Tensor, codebook_size: int):
    """Uniforms for the conditional Gumbel noise of the straight-through tokens: (n, T, K), one stream per
    image (seeded on its global row), so a run's noise does not depend on micro-batching or ranks."""
    rows = []
    for i in idx.tolist():
        gen = torch.Generator().manual_seed(seed_for(seed + 2, step, i, image_ids[i, 0].item()))
        rows.append(torch.rand(image_ids.shape[1], codebook_size, generator=gen))
    return torch.stack(rows).to(image_ids.device)


def sft_step_loss(out: dict, batch: dict, keep: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Per-sample SFT loss (n,) from one policy.forward output, and its statistics.

    keep (n,) float: 1 for images whose tokens generation SFT imitates, else 0.
    Generation NLL is averaged over the scored image positions: for a masked-decoding family the re-masked
    ones (`token_mask`), as Show-o's masked-token objective, since a visible token is in the model's own input;
    for an autoregressive family (no token_mask) every position.
    """
    total, stats = 0.0, {}
    if "gen" in batch:  # under --couple alone the forward has generation logits that no term scores
        image_ids = batch["gen"]["image_ids"]  # (n, T)
        scored = batch["gen"].get("token_mask", torch.ones_like(image_ids))  # (n, T)
        nll = token_nll(out["gen_logits"], image_ids, scored)
        total = total + keep * nll  # dropped images weigh 0 but still count in the mean
        stats["gen_nll"] = masked_mean(nll.detach(), keep) if keep.sum() > 0 else 0.0
    if "und" in batch:
        nll = token_nll(out["und_logits"], batch["und"]["answer_ids"], batch["und"]["answer_mask"])
        total = total + nll
        stats["und_nll"] = nll.detach().mean()
    return total, {k: float(v) for k, v in stats.items()}
