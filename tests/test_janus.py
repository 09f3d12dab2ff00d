"""Janus behind the contract: the sampler, teacher forcing, understanding, saving, loading."""

import json

import pytest
import torch

from generate import image_uniforms, rollout, sample_images_ar
from grpo import token_logprobs
from understand import answer_questions


def _prompts(policy, texts, group):
    ids, mask = policy.tokenize_gen_prompts([t for t in texts for _ in range(group)])
    return ids, mask


def _record_steps(policy, monkeypatch):
    """Wrap gen_step so every step's raw [cond; uncond] logits are kept."""
    seen = []
    real = policy.gen_step

    def spy(*args, **kwargs):
        logits = real(*args, **kwargs)
        seen.append(logits.clone())
        return logits

    monkeypatch.setattr(policy, "gen_step", spy)
    return seen


@pytest.mark.parametrize("cfg_scale", [5.0, None])
def test_teacher_forced_logprobs_equal_the_sampled_distribution(janus_tiny, monkeypatch, cfg_scale):
    """One teacher-forced pass reproduces, at every step, the distribution the sampler drew from,
    for left-padded prompts of different lengths, with and without CFG (fp32, <= 1e-5)."""
    p = janus_tiny
    ids, mask = _prompts(p, ["a photo of a cat", "a photo of a purple wine glass and a black apple"], 2)
    assert (mask == 0).any(), "the prompts should need left padding"
    seen = _record_steps(p, monkeypatch)
    u = image_uniforms(0, 0, 0, ids.shape[0], p.num_image_tokens)
    tokens = sample_images_ar(p, ids, mask, u, cfg_scale=cfg_scale, temperature=1.0)
    monkeypatch.undo()
    n = ids.shape[0]
    steps = torch.stack(seen, 1)  # (B, T, K)
    sampled = steps[:n] if cfg_scale is None else p.guide(steps[:n], steps[n:], cfg_scale)
    with torch.no_grad():
        out = p(gen=dict(prompt_ids=ids, prompt_mask=mask, image_ids=tokens, cfg_scale=cfg_scale))
    want = torch.log_softmax(sampled, -1)
    got = torch.log_softmax(out["gen_logits"], -1)
    assert (got - want).abs().max() < 1e-5
    assert (token_logprobs(out["gen_logits"], tokens) - want.gather(-1, tokens[..., None])[..., 0]).abs().max() < 1e-5
    assert (out["gen_cond_logits"] - steps[:n]).abs().max() < 1e-4


def test_greedy_sampler_matches_transformers_generate(janus_tiny):
    """Our loop and transformers' generate(generation_mode="image") agree token for token (greedy, CFG 5)."""
    p = janus_tiny
    ids, mask = _prompts(p, ["a photo of a dog", "a photo of three red umbrellas"], 1)
    u = torch.zeros(ids.shape[0], p.num_image_tokens)
    ours = sample_images_ar(p, ids, mask, u, cfg_scale=5.0, temperature=0.0)
    theirs = p.model.generate(input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=False,
                              guidance_scale=5.0, top_k=None)  # greedy: the config's sampling top_k does not apply
    assert torch.equal(ours, theirs[:, -p.num_image_tokens:])


def test_rollout_is_deterministic_and_seeded(janus_tiny, records):
    a = rollout(janus_tiny, records[:2], 2, seed=1, step=0, first_index=0, cfg_scale=5.0)
    b = rollout(janus_tiny, records[:2], 2, seed=1, step=0, first_index=0, cfg_scale=5.0)
    c = rollout(janus_tiny, records[:2], 2, seed=1, step=1, first_index=0, cfg_scale=5.0)
    assert torch.equal(a.image_ids, b.image_ids) and not torch.equal(a.image_ids, c.image_ids)
    assert a.image_ids.shape == (4, janus_tiny.num_image_tokens)
    assert 0 <= int(a.image_ids.min()) and int(a.image_ids.max()) < janus_tiny.codebook_size
    assert a.pixels.shape == (4, 3, janus_tiny.image_size, janus_tiny.image_size)
    assert 0 <= float(a.pixels.min()) and float(a.pixels.max()) <= 1
    # an image's tokens do not depend on the batch it was drawn in (rank independence)
    d = rollout(janus_tiny, records[1:2], 2, seed=1, step=0, first_index=2, cfg_scale=5.0)
    assert torch.equal(d.image_ids, a.image_ids[2:])


def test_batched_cached_answers_equal_one_by_one(janus_tiny, records):
    p = janus_tiny
    ro = rollout(p, records[:2], 2, seed=0, step=0, first_index=0, cfg_scale=5.0)
    images = p.encode_images(ro.pixels)
    questions = [r["question"] for r in ro.records]
    *_, ans_ids, ans_mask, texts = answer_questions(p, images, questions, max_new_tokens=8)
    for i in range(len(questions)):
        *_, one_ids, one_mask, one = answer_questions(p, images[i : i + 1], questions[i : i + 1], max_new_tokens=8)
        assert one == texts[i : i + 1]
        k = int(one_mask.sum())
        assert torch.equal(one_ids[0, :k], ans_ids[i, :k])


def test_answer_logits_equal_the_cached_loop(janus_tiny, records, monkeypatch):
    """Teacher-forced answer logits equal the logits the greedy loop saw."""
    p = janus_tiny
    ro = rollout(p, records[:2], 1, seed=0, step=0, first_index=0, cfg_scale=5.0)
    images = p.encode_images(ro.pixels)
    seen, real = [], p.und_step
    monkeypatch.setattr(p, "und_step", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    q_ids, q_mask, a_ids, a_mask, _ = answer_questions(p, images, [r["question"] for r in ro.records], max_new_tokens=6)
    monkeypatch.undo()
    with torch.no_grad():
        out = p(und=dict(images=images, prompt_ids=q_ids, prompt_mask=q_mask, answer_ids=a_ids, answer_mask=a_mask))
    steps = torch.stack(seen, 1)[:, : a_ids.shape[1]]
    assert (torch.log_softmax(out["und_logits"], -1) - torch.log_softmax(steps, -1)).abs().max() < 1e-5


def test_straight_through_images_carry_answer_gradients_to_generation(fresh_janus, records):
    p = fresh_janus.eval()
    ro = rollout(p, records[:1], 2, seed=0, step=0, first_index=0, cfg_scale=5.0)
    q_ids, q_mask = p.tokenize_und_prompts([ro.records[0]["question"]] * 2)
    a_ids, a_mask = p.tokenize_answers([ro.records[0]["answer"]] * 2)
    gen = dict(prompt_ids=ro.prompt_ids, prompt_mask=ro.prompt_mask, image_ids=ro.image_ids, cfg_scale=5.0)
    und = dict(images=None, prompt_ids=q_ids, prompt_mask=q_mask, answer_ids=a_ids, answer_mask=a_mask)
    out = p(gen=gen, und=und, couple=dict(tau=1.0, noise=torch.rand(2, p.num_image_tokens, p.codebook_size)))
    loss = -token_logprobs(out["und_logits"], a_ids)[a_mask.bool()].mean()
    loss.backward()
    head = p.model.model.generation_head.vision_head.weight.grad
    assert head is not None and head.abs().sum() > 0
    # forward, the straight-through image is exactly the rollout's decoded image
    onehot = torch.nn.functional.one_hot(ro.image_ids, p.codebook_size).float()
    with torch.no_grad():
        assert (p.onehot_to_und_images(onehot) - p.encode_images(ro.pixels)).abs().max() < 1e-4
    assert all(q.grad is None for q in p.model.model.vqmodel.parameters())  # the VQ model stays frozen


def test_save_and_load_round_trip(janus_tiny, tmp_path):
    from models import load_policy

    janus_tiny.save(tmp_path)
    back = load_policy("janus-tiny", str(tmp_path))
    a, b = janus_tiny.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert back.model.lm_head.weight.data_ptr() != back.model.get_input_embeddings().weight.data_ptr()
    assert back.model.generation_config.generation_kwargs["boi_token_id"] == janus_tiny.boi_id
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "janus"


def test_a_tokenizer_saved_with_right_padding_still_pads_prompts_left(tmp_path):
    """A hub tokenizer may come with padding_side="right": prompts are padded left anyway, so a short prompt
    in a batch gives the same ids and the same image logits as alone."""
    from models import load_policy

    saved = load_policy("janus-tiny")
    saved.tokenizer.padding_side = "right"
    saved.save(tmp_path)
    p = load_policy("janus-tiny", str(tmp_path)).eval()
    assert p.tokenizer.padding_side == "right"  # the premise: the loaded tokenizer asks for right padding
    texts = ["a photo of a cat", "a photo of a purple wine glass and a black apple"]
    for tokenize in (p.tokenize_gen_prompts, p.tokenize_und_prompts):
        ids, mask = tokenize(texts)
        alone, _ = tokenize(texts[:1])
        assert mask[0, 0] == 0 and bool(mask[:, -1].all())  # pads on the left only
        assert torch.equal(ids[0, -alone.shape[1]:], alone[0])
    ids, mask = p.tokenize_gen_prompts(texts)
    one_ids, one_mask = p.tokenize_gen_prompts(texts[:1])
    image_ids = torch.randint(0, p.codebook_size, (2, p.num_image_tokens), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch = p(gen=dict(prompt_ids=ids, prompt_mask=mask, image_ids=image_ids, cfg_scale=5.0))["gen_logits"]
        one = p(gen=dict(prompt_ids=one_ids, prompt_mask=one_mask, image_ids=image_ids[:1],
                         cfg_scale=5.0))["gen_logits"]
    assert (batch[0] - one[0]).abs().max() < 1e-4


def test_bad_model_inputs_fail_clearly(tmp_path):
    from models import load_policy

    with pytest.raises(ValueError, match="unknown --model"):
        load_policy("janus-huge")
    with pytest.raises(ValueError, match="not a folder"):
        load_policy("janus-tiny", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no config.json"):
        load_policy("janus-tiny", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="not a Janus checkpoint"):
        load_policy("janus-tiny", str(tmp_path))
