"""Stage 2 of a UniRL iteration: the same model answers a question about each of its own images.

The question comes with the prompt's record ("How many items in this image?"), so no external data
or judge is involved: the model's understanding grades its own generation, and reward.py turns the
answer into a number.

The loop is batched over all N images with one KV cache; greedy at temperature 0 (evaluation), sampled above it
(training samples at 1, train.py --answer-temperature):

    prefill [question prompt with the image's slots] for all rows
    repeat: token = argmax (or a sample at `temperature`), feed it, until every row has said EOS

Rows that finished keep being fed PAD; their later tokens are masked out of `answer_mask`.
Answers are text: `policy.und_step` gives image slots, BOI/EOI, image codes, PAD and other control tokens
probability 0 (models.restrict_to_answer_vocab), and the training forward's answer logits are restricted the
same way, so GRPO's ratio and KL and SFT's NLL are of the distribution the answers were drawn from.
What it simplifies on purpose: a fixed `max_new_tokens` cap (UniRL's answers are a few words; the
original evaluation allowed 100).

Run it alone:  python understand.py --model janus-tiny --question "How many items in this image?"
"""

from __future__ import annotations

import argparse

import torch

from generate import image_uniforms, sample_tokens, seed_for


@torch.no_grad()
def answer_questions(policy, images, questions: list[str], *, max_new_tokens: int = 24, temperature: float = 0.0,
                     uniforms: torch.Tensor | None = None):
    """Answer one question per image.

    images: the policy's understanding input for N images (see `policy.encode_images`).
    Returns question ids and mask (N, L), answer ids and mask (N, A) with EOS included, and the texts.
    `uniforms` (N, max_new_tokens) are needed only when temperature > 0.
    """
    device = next(policy.parameters()).device
    ids, mask = policy.tokenize_und_prompts(questions)
    ids, mask = ids.to(device), mask.to(device)
    n = ids.shape[0]
    cache = policy.new_cache(n, ids.shape[1] + max_new_tokens)  # allocated once for the prompt and the longest answer
    logits = policy.und_step(cache, mask, ids, images)  # prefill: (N, V)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    answer_ids, answer_mask = [], []
    step_mask = mask
    for t in range(max_new_tokens):
        # the zeros stand in only for greedy decoding (temperature 0), which never reads u
        u = uniforms[:, t] if uniforms is not None else torch.zeros(n, device=device)
        token = sample_tokens(logits, u, temperature)
        # finished rows emit PAD so the batch stays in lockstep (one forward for all rows); answer_mask drops it
        token = torch.where(done, torch.full_like(token, policy.pad_id), token)
        answer_ids.append(token)
        # the EOS itself is part of the answer: `done` turns True only after this line
        answer_mask.append((~done).long())
        done = done | (token == policy.eos_id)
        if bool(done.all()) or t + 1 == max_new_tokens:
            break
        # every row's new token is a real key, PAD included: only a finished row reads it, and its output is unused
        step_mask = torch.cat([step_mask, step_mask.new_ones(n, 1)], 1)
        logits = policy.und_step(cache, step_mask, token[:, None])
    answer_ids = torch.stack(answer_ids, 1)  # (N, A)
    answer_mask = torch.stack(answer_mask, 1)
    return ids, mask, answer_ids, answer_mask, policy.decode_answers(answer_ids)


def sample_votes(policy, images, questions: list[str], votes: int, *, seed: int, step: int, first_index: int,
                 max_new_tokens: int, temperature: float) -> list[list[str]]:
    """`votes` more sampled answers per image (train.py --answer-reward agreement, gated, image-baseline), each from
    a stream of its own (seed_for(seed, 1000 + k)), apart from the trained answer's: their texts, a list per image."""
    texts = [[] for _ in questions]
    device = next(policy.parameters()).device
    for k in range(votes):
        u = image_uniforms(seed_for(seed, 1000 + k), step, first_index, len(questions), max_new_tokens).to(device)
        *_, said = answer_questions(policy, images, questions, max_new_tokens=max_new_tokens,
                                    temperature=temperature, uniforms=u)
        texts = [mine + [text] for mine, text in zip(texts, said)]
    return texts


def main() -> None:
    from generate import rollout
    from models import load_policy

    ap = argparse.ArgumentParser(description="Generate images for a prompt, then let the model answer a question about them.")
    ap.add_argument("--model", default="janus-tiny")
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--prompt", default="a photo of two cats")
    ap.add_argument("--question", default="How many items in this image?")
    ap.add_argument("--n", type=int, default=2)
    args = ap.parse_args()
    policy = load_policy(args.model, args.model_path).eval()
    ro = rollout(policy, [{"prompt": args.prompt}], args.n, seed=0, step=0, first_index=0,
                 cfg_scale=policy.default_cfg_scale)
    images = policy.images_for_understanding(ro.image_ids, ro.pixels)
    *_, answers = answer_questions(policy, images, [args.question] * args.n)
    for i, a in enumerate(answers):
        print(f"image {i}: {a!r}")


if __name__ == "__main__":
    main()
