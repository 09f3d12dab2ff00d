"""What every family's code shares: the training forward's body, the answer vocabulary's mask, the
straight-through image tokens of the end-to-end path, hub downloads and atomic folders.

The families (janus.py, showo_policy.py, showo.py, magvitv2.py) import this file; it imports none of them,
and no stage.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import torch

from support.checkpoint import fsync_dir, settle_tree


def fetch_from_hub(hub_id: str, files: list[str] | None = None, where: str = "pass the folder with --model-path") -> Path:
    """Download a hub repository (only `files`, if given) into huggingface_hub's cache and return its folder.
    The one place that reaches a hub; without one (HF_HUB_OFFLINE, no network, unknown id) the error says
    what to download and `where` to put it instead."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=files))
    except Exception as err:  # no network, offline mode, unknown id, gated repository, ...
        raise ValueError(f"could not fetch {hub_id!r} from the hub ({type(err).__name__}: {err}). Download it "
                         f"where the hub is reachable and {where}") from err


def training_forward(policy, gen: dict | None, und: dict | None, couple: dict | None) -> dict:
    """The body of every family's forward: generation logits, answer logits, and the coupling between them.

    The family supplies _gen_logits(**gen) -> (guided, cond), _und_logits(images, ...) and
    onehot_to_und_images(onehot), which turns straight-through one-hot image tokens into its
    understanding input (Janus: the VQ decoder's pixels; Show-o: the one-hot rows themselves)."""
    out = {}
    if gen is not None:
        out["gen_logits"], out["gen_cond_logits"] = policy._gen_logits(**gen)
    if und is not None:
        images = und["images"]
        if couple is not None:
            onehot = straight_through_onehot(out["gen_logits"], gen["image_ids"], couple["tau"], couple.get("noise"))
            images = policy.onehot_to_und_images(onehot)
        out["und_logits"] = policy._und_logits(images, und["prompt_ids"], und["prompt_mask"], und["answer_ids"],
                                               und["answer_mask"])
    return out


def restrict_to_answer_vocab(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Answer logits (..., V) with every token outside `allowed` (V,) set to the dtype's lowest value.

    Each family applies this inside und_step (the answers understand.py samples) and _und_logits (the
    teacher-forced logits every answer loss reads), so grpo.token_logprobs and sft.token_nll see the same
    restricted softmax as the sampler with no change of theirs. The value is finite, not -inf: an answer's
    padded tail holds PAD ids, and their masked-out log-probs (exactly this value, whatever the rest of the
    row) must cancel in the ratio and the KL; -inf - (-inf) would be NaN, and NaN * mask 0 stays NaN. Divided by
    an answer temperature below 1 the value does overflow to -inf, so grpo.policy_term also zeroes masked
    positions before its ratio and KL."""
    return logits.masked_fill(~allowed.to(logits.device), torch.finfo(logits.dtype).min)


@contextlib.contextmanager
def atomic_folder(directory):
    """Yield a temporary sibling folder to fill; it replaces `directory` only once the block succeeded and its
    files are on disk (fsynced, with the umask's modes)."""
    directory = Path(directory)
    tmp, old = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        settle_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    fsync_dir(directory.parent)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ the end-to-end path (--couple)
def conditional_gumbels(logits: torch.Tensor, tokens: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Perturbed logits z + g whose argmax is `tokens`, distributed as Gumbel-max given that argmax.

    logits (N, T, K); tokens (N, T); uniforms (N, T, K) in (0, 1). Returns (N, T, K).
    """
    z = logits.float()
    # the clamp keeps both logs finite (1 - 1e-7 is still below 1 in float32)
    gumbel = -torch.log(-torch.log(uniforms.clamp(1e-20, 1 - 1e-7)))  # standard Gumbel(0, 1)
    top = torch.logsumexp(z, -1, keepdim=True) + gumbel.gather(-1, tokens.unsqueeze(-1))  # the winner's value
    others = z + gumbel  # unconstrained Gumbel(z_i) draws
    # truncate every other draw below `top`: -log(exp(-top) + exp(-g_i)), computed stably
    truncated = -torch.logaddexp(-top, -others)
    return truncated.scatter(-1, tokens.unsqueeze(-1), top)


def straight_through_onehot(logits: torch.Tensor, tokens: torch.Tensor, tau: float,
                            uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """hard one-hot(tokens) forward, gradient of softmax((z + g) / tau) backward. (N, T, K) -> (N, T, K).

    With uniforms None the relaxation has no noise (plain straight-through on softmax(z / tau)).
    """
    perturbed = logits if uniforms is None else conditional_gumbels(logits, tokens, uniforms)
    soft = torch.softmax(perturbed.float() / tau, -1)
    hard = torch.nn.functional.one_hot(tokens, soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft  # value: hard; gradient: soft's
