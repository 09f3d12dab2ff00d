"""Answers are text: sampled from the text vocabulary only, and trained on the same restricted softmax.

The model's own answers feed the training forward (GRPO trains on them). An answer that holds the image
placeholder, BOI or PAD must neither be sampled nor, if it reaches the forward anyway, move the image
features: the image slots are the question's, found by position.

Run: python -m pytest -q tests/test_answers.py
"""

import pytest
import torch

from generate import sample_tokens
from grpo import token_logprobs
from understand import answer_questions


def control_ids(policy) -> list[int]:
    """Token ids an answer must never hold, listed by hand per family (not read from the policy's mask)."""
    if policy.family == "janus":
        tok = policy.tokenizer
        return [policy.image_token_id, policy.boi_id, tok.convert_tokens_to_ids("<end_of_image>"), policy.pad_id,
                policy.bos_id]
    c = policy.config
    return [c.pad_id, c.soi_id, c.eoi_id, c.t2i_id, c.mmu_id, c.image_offset, c.image_offset + 5, c.mask_token_id]


def und_inputs(policy, n: int = 2):
    """Random understanding images (the family's own input kind) and templated questions."""
    g = torch.Generator().manual_seed(0)
    if policy.family == "janus":
        images = torch.rand(n, 3, policy.image_size, policy.image_size, generator=g) * 2 - 1
    else:
        images = torch.randint(0, policy.codebook_size, (n, policy.num_image_tokens), generator=g)
    q_ids, q_mask = policy.tokenize_und_prompts(["How many items in this image?", "What color is the cube?"][:n])
    return images, q_ids, q_mask


@pytest.fixture(params=["janus", "showo"])
def policy(request, janus_tiny, showo_tiny):
    return janus_tiny if request.param == "janus" else showo_tiny


def test_an_answer_of_control_tokens_does_not_move_the_image_slots(policy):
    """The training forward reads an answer of placeholder / BOI / PAD ids as text: it runs, and the question
    part (the logits that predict the first answer token) equals that of a normal answer."""
    images, q_ids, q_mask = und_inputs(policy)
    normal_ids, normal_mask = policy.tokenize_answers(["two", "red"])
    bad = control_ids(policy)
    special_ids = torch.tensor([bad + [policy.eos_id]] * 2)
    with torch.no_grad():
        normal = policy(und=dict(images=images, prompt_ids=q_ids, prompt_mask=q_mask, answer_ids=normal_ids,
                                 answer_mask=normal_mask))["und_logits"]
        special = policy(und=dict(images=images, prompt_ids=q_ids, prompt_mask=q_mask, answer_ids=special_ids,
                                  answer_mask=torch.ones_like(special_ids)))["und_logits"]
    assert special.shape[:2] == special_ids.shape
    torch.testing.assert_close(special[:, 0], normal[:, 0], rtol=0, atol=1e-5)


def test_answers_never_hold_control_tokens_even_when_the_head_favours_them(policy):
    """A head pushed hard towards control tokens still answers with text (greedy and sampled), and the
    training log-probs give those tokens probability 0 and the text a softmax that sums to 1."""
    bad = control_ids(policy)
    head = policy.model.lm_head if policy.family == "janus" else policy.model.showo.lm_head
    bias = torch.zeros(head.out_features)
    bias[bad] = 1e4
    hook = head.register_forward_hook(lambda module, inputs, output: output + bias.to(output))
    try:
        images, q_ids, q_mask = und_inputs(policy)
        for temperature in (0.0, 1.0):
            u = torch.rand(2, 6, generator=torch.Generator().manual_seed(1))
            *_, a_ids, a_mask, _ = answer_questions(policy, images, ["How many items in this image?",
                                                                     "What color is the cube?"],
                                                    max_new_tokens=6, temperature=temperature, uniforms=u)
            spoken = a_ids[a_mask.bool()]
            assert not torch.isin(spoken, torch.tensor(bad)).any(), (temperature, spoken)
        with torch.no_grad():
            logits = policy(und=dict(images=images, prompt_ids=q_ids, prompt_mask=q_mask, answer_ids=a_ids,
                                     answer_mask=a_mask))["und_logits"]
    finally:
        hook.remove()
    probs = torch.softmax(logits, -1)
    assert probs[..., bad].max() == 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]))
    # the padded tail's masked-out PAD ids: finite log-probs that cancel between two passes (no NaN ratio)
    logp = token_logprobs(logits, a_ids)
    assert torch.isfinite(logp).all() and torch.equal(logp - logp, torch.zeros_like(logp))


def test_inverse_cdf_never_draws_a_zero_probability_token():
    """u = 0 used to select token 0 whatever its probability; a masked-out token has probability 0."""
    logits = torch.tensor([[torch.finfo(torch.float32).min, 0.0, 1.0, torch.finfo(torch.float32).min]] * 3)
    ids = sample_tokens(logits, torch.tensor([0.0, 0.5, 1 - 1e-17]), temperature=1.0)
    assert ids.tolist()[0] == 1 and set(ids.tolist()) <= {1, 2}
