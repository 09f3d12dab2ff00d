"""Show-o behind the contract: the MaskGIT sampler, both GRPO estimators, cached understanding, saving."""

import copy
import json

import pytest
import torch

from generate import row_generators, rollout, sample_images_masked
from grpo import grpo_step_loss, remask_positions, sample_logprobs, token_logprobs
from understand import answer_questions

# Tokens committed per step by the original sampler's schedule arithmetic (cosine, N = image tokens, T = steps),
# worked out by hand.
SPEC_COMMITS = {
    (1024, 50): [1, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 11, 13, 13, 14, 15, 16, 17, 18, 18, 19, 20, 21, 22, 22, 24, 23,
                 25, 25, 26, 26, 27, 27, 28, 29, 29, 29, 30, 30, 30, 31, 31, 31, 32, 31, 32, 32, 32, 32, 32],
    (256, 18): [1, 3, 5, 7, 8, 11, 12, 13, 15, 17, 18, 19, 19, 21, 21, 22, 22, 22],
    (1024, 12): [9, 26, 43, 60, 74, 88, 101, 112, 120, 126, 132, 133],
}


class RandomLogits:
    """Just enough of a policy for the sampler: random logits, so the schedule arithmetic is exercised at
    the real sizes without a real network."""

    decoding, codebook_size = "masked", 16

    def __init__(self, length):
        self.num_image_tokens, self.mask_code = length, 16

    def masked_logits(self, prompt_ids, codes, cfg_scale, prefix=None):
        return torch.randn(codes.shape[0], codes.shape[1], self.codebook_size)


@pytest.mark.parametrize("length,steps", list(SPEC_COMMITS))
def test_sampler_commits_the_specs_number_of_tokens_each_step(length, steps):
    torch.manual_seed(0)
    ids, commit = sample_images_masked(RandomLogits(length), torch.zeros(2, 3, dtype=torch.long),
                                       torch.Generator().manual_seed(0), timesteps=steps)
    counts = [int((commit[0] == s).sum()) for s in range(steps)]
    # the table lists the last step's remainder without the forcibly re-masked token (+1 returned)
    assert counts == SPEC_COMMITS[(length, steps)]
    assert int(ids.min()) >= 0 and int(ids.max()) < 16


def test_sampler_is_deterministic_per_generator_and_batch_independent(showo_tiny, records):
    p = showo_tiny
    ids, _ = p.tokenize_gen_prompts([r["prompt"] for r in records[:3]])
    a, ca = sample_images_masked(p, ids, row_generators(0, 0, 0, 3, "cpu"), cfg_scale=5.0, timesteps=6)
    b, cb = sample_images_masked(p, ids, row_generators(0, 0, 0, 3, "cpu"), cfg_scale=5.0, timesteps=6)
    assert torch.equal(a, b) and torch.equal(ca, cb)
    c, _ = sample_images_masked(p, ids, row_generators(1, 0, 0, 3, "cpu"), cfg_scale=5.0, timesteps=6)
    assert not torch.equal(a, c)
    # one row with its own generator, alone, draws what it drew inside the batch (the original at batch 1)
    alone, _ = sample_images_masked(p, ids[1:2], row_generators(0, 0, 1, 1, "cpu")[0], cfg_scale=5.0, timesteps=6)
    assert torch.equal(alone[0], a[1])
    assert int(a.min()) >= 0 and int(a.max()) < p.codebook_size


def test_prompt_keys_computed_once_give_the_same_logits_and_tokens(showo_tiny, records):
    p = showo_tiny
    ids, _ = p.tokenize_gen_prompts([r["prompt"] for r in records[:3]])
    codes = torch.randint(0, p.codebook_size, (3, p.num_image_tokens))
    codes[:, ::3] = p.mask_code
    prefix = p.prefix_cache(ids, 5.0)
    for _ in range(2):  # the cache is cropped back after each step, so it serves every step
        assert (p.masked_logits(ids, codes, 5.0, prefix) - p.masked_logits(ids, codes, 5.0)).abs().max() < 1e-4
    fast, _ = sample_images_masked(p, ids, row_generators(0, 0, 0, 3, "cpu"), cfg_scale=5.0, timesteps=5)
    slow, _ = sample_images_masked(p, ids, row_generators(0, 0, 0, 3, "cpu"), cfg_scale=5.0, timesteps=5,
                                   reuse_prefix=False)
    assert torch.equal(fast, slow)


def test_trajectory_logprobs_equal_the_sampling_time_ones(showo_tiny, records, monkeypatch):
    p = showo_tiny
    ids, mask = p.tokenize_gen_prompts([r["prompt"] for r in records[:2]])
    seen, real = [], p.masked_logits
    monkeypatch.setattr(p, "masked_logits", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    tokens, commit = sample_images_masked(p, ids, row_generators(0, 0, 0, 2, "cpu"), cfg_scale=5.0, timesteps=5)
    monkeypatch.undo()
    steps = torch.log_softmax(torch.stack(seen), -1)  # (S, N, T, K)
    want = steps.gather(-1, tokens[None, ..., None].expand(len(seen), -1, -1, 1))[..., 0]  # (S, N, T)
    want = want.gather(0, commit[None])[0]  # each token at the step that committed it
    with torch.no_grad():
        out = p(gen=dict(prompt_ids=ids, prompt_mask=mask, image_ids=tokens, cfg_scale=5.0, commit_step=commit))
    assert (token_logprobs(out["gen_logits"], tokens) - want).abs().max() < 1e-5


def _batch(p, ro, estimator):
    gen = dict(prompt_ids=ro.prompt_ids, prompt_mask=ro.prompt_mask, image_ids=ro.image_ids, cfg_scale=5.0)
    if estimator == "trajectory":
        gen["commit_step"] = ro.commit_steps
    else:
        gen["token_mask"] = remask_positions(0, 0, 0, ro.image_ids.shape[0], 2, p.num_image_tokens)
    q_ids, q_mask = p.tokenize_und_prompts([r["question"] for r in ro.records])
    a_ids, a_mask = p.tokenize_answers(["two cats"] * len(ro.records))
    und = dict(images=ro.image_ids, prompt_ids=q_ids, prompt_mask=q_mask, answer_ids=a_ids, answer_mask=a_mask)
    return {"gen": gen, "und": und}


@pytest.mark.parametrize("estimator", ["remask", "trajectory"])
def test_step_zero_ratio_is_one_and_kl_zero_for_both_estimators(showo_tiny, records, estimator):
    p = showo_tiny
    ro = rollout(p, records[:2], 2, seed=0, step=0, first_index=0, cfg_scale=5.0, timesteps=5)
    batch = _batch(p, ro, estimator)
    old, ref = sample_logprobs(p, batch), sample_logprobs(copy.deepcopy(p), batch)
    out = p(gen=batch["gen"], und=batch["und"])

    class Cfg:
        clip_eps, kl_beta, und_weight = 0.2, 0.2, 1.0

    _, stats = grpo_step_loss(out, batch, old, ref, torch.tensor([1.0, -1.0, 0.5, -0.5]), Cfg)
    assert abs(stats["gen_ratio"] - 1) < 1e-6 and stats["gen_kl"] < 1e-9 and stats["und_kl"] < 1e-9


def test_remask_positions_share_the_ratio_within_a_group():
    masks = remask_positions(3, 1, 0, 6, 3, 64)
    counts = masks.sum(1).tolist()
    assert counts[0] == counts[1] == counts[2] and counts[3] == counts[4] == counts[5] and min(counts) >= 1
    assert not torch.equal(masks[0], masks[1])  # positions differ per image
    assert torch.equal(remask_positions(3, 1, 3, 3, 3, 64), masks[3:])  # rank independent


def test_batched_cached_answers_equal_uncached_batch_one(showo_tiny, records):
    """Our batched KV-cached answers equal the original way: one image at a time, full recompute per token."""
    p = showo_tiny
    ro = rollout(p, records[:3], 1, seed=0, step=0, first_index=0, cfg_scale=5.0, timesteps=4)
    questions = [r["question"] for r in ro.records]
    *_, batched, batched_mask, _ = answer_questions(p, ro.image_ids, questions, max_new_tokens=6)
    for i, q in enumerate(questions):
        q_ids, q_mask = p.tokenize_und_prompts([q])
        answer = []
        for _ in range(6):  # uncached greedy decoding
            a = torch.tensor([answer + [0]])
            with torch.no_grad():
                logits = p(und=dict(images=ro.image_ids[i : i + 1], prompt_ids=q_ids, prompt_mask=q_mask,
                                    answer_ids=a, answer_mask=torch.ones_like(a)))["und_logits"]
            answer.append(int(logits[0, -1].argmax()))
            if answer[-1] == p.eos_id:
                break
        k = int(batched_mask[i].sum())
        assert batched[i, :k].tolist() == answer[:k]


def test_straight_through_tokens_carry_answer_gradients_to_generation(records):
    """d(answer loss)/d(generation logits) is exactly the chain rule through softmax(z / tau): the answer's
    gradient at the one-hot image rows, times the softmax Jacobian. Without the coupling it would be zero."""
    import torch.nn.functional as F

    from models import load_policy

    p, tau = load_policy("showo-tiny").eval(), 0.5
    ro = rollout(p, records[:1], 2, seed=0, step=0, first_index=0, cfg_scale=5.0, timesteps=4)
    batch = _batch(p, ro, "remask")
    out = p(gen=batch["gen"], und=batch["und"], couple=dict(tau=tau, noise=None))
    out["gen_logits"].retain_grad()
    token_logprobs(out["und_logits"], batch["und"]["answer_ids"]).sum().backward()
    # the answer's gradient at the image tokens read as one-hot rows (the same forward values)
    onehot = F.one_hot(ro.image_ids, p.codebook_size).float().requires_grad_()
    logp = token_logprobs(p(und={**batch["und"], "images": onehot})["und_logits"], batch["und"]["answer_ids"])
    (w,) = torch.autograd.grad(logp.sum(), onehot)  # (N, T, K)
    soft = torch.softmax(out["gen_logits"].detach() / tau, -1)
    want = soft * (w - (soft * w).sum(-1, keepdim=True)) / tau  # d/dz of sum(softmax(z / tau) * w)
    got = out["gen_logits"].grad
    assert got is not None and want.abs().max() > 1e-4
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_save_and_load_round_trip(showo_tiny, tmp_path):
    from models import load_policy

    showo_tiny.save(tmp_path / "ckpt")
    back = load_policy("showo-tiny", str(tmp_path / "ckpt"))
    a, b = showo_tiny.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert back.tokenizer("USER: hi")["input_ids"] == showo_tiny.tokenizer("USER: hi")["input_ids"]
    with pytest.raises(ValueError, match="not a Show-o checkpoint"):
        load_policy("showo-tiny", str(tmp_path))


def test_a_preset_has_one_text_block_wherever_its_weights_come_from(showo_tiny, tmp_path):
    """The text block length moves the image's RoPE positions, so a local copy of the released files must get
    the preset's (64 for showo, as from the hub id), and a checkpoint the length it was saved with."""
    from models import load_policy

    showo_tiny.save(tmp_path / "released")
    config = json.loads((tmp_path / "released" / "config.json").read_text())
    del config["max_text_len"]  # the released config.json stores none
    (tmp_path / "released" / "config.json").write_text(json.dumps(config))
    p = load_policy("showo", str(tmp_path / "released"))
    ids, _ = p.tokenize_gen_prompts(["a cat"])
    assert p.config.max_text_len == 64 and ids.shape[1] == 65  # UniRL's GenEval block: image tokens from 66 on
    assert load_policy("showo-256", str(tmp_path / "released")).config.max_text_len == 128
    p.save(tmp_path / "ckpt")  # what a run writes: the length it trained with, whichever preset reloads it
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["max_text_len"] == 64
    assert load_policy("showo-256", str(tmp_path / "ckpt")).config.max_text_len == 64


def test_without_a_hub_each_missing_part_names_itself_and_the_offline_layout(showo_tiny, tmp_path):
    """conftest sets HF_HUB_OFFLINE, so every hub id fails at once, as on a machine with no hub access."""
    import shutil

    from models import load_policy

    with pytest.raises(ValueError, match="could not fetch 'showlab/show-o-512x512'.*magvitv2/ subfolder"):
        load_policy("showo")
    with pytest.raises(ValueError, match="could not fetch 'deepseek-community/Janus-Pro-1B'.*--model-path"):
        load_policy("janus-pro-1b")
    showo_tiny.save(tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "ckpt" / "magvitv2")  # Show-o's weights alone, as the hub repository holds them
    with pytest.raises(ValueError, match="could not fetch 'showlab/magvitv2'"):
        load_policy("showo", str(tmp_path / "ckpt"))
    showo_tiny.save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "tokenizer_config.json").unlink()  # no tokenizer beside config.json: phi-1_5 is fetched
    with pytest.raises(ValueError, match="could not load the text tokenizer 'microsoft/phi-1_5'"):
        load_policy("showo", str(tmp_path / "ckpt"))


def test_trajectory_subset_scores_k_whole_sampler_steps_from_its_own_stream(monkeypatch):
    """--traj-steps k scores every token of k sampler steps, the same on every call at one (seed, step), and
    draws them from a stream no image's sampling uses (those are seed_for(seed, step, i), i >= 0)."""
    import grpo

    commit_steps = torch.arange(18).repeat(2, 3)  # 2 images, 54 tokens, committed over 18 steps
    assert grpo.trajectory_subset(commit_steps, 0, 5, 3).all() and grpo.trajectory_subset(commit_steps, 18, 5, 3).all()
    chosen = grpo.trajectory_subset(commit_steps, 2, 5, 3)
    assert torch.equal(chosen, grpo.trajectory_subset(commit_steps, 2, 5, 3))
    assert len(commit_steps[chosen].unique()) == 2 and chosen.sum() == 2 * 2 * 3  # whole steps, on both images
    streams = []
    monkeypatch.setattr(grpo, "seed_for", lambda *parts: streams.append(parts) or 0)
    grpo.trajectory_subset(commit_steps, 2, 5, 3)
    assert not [p for p in streams if len(p) == 3 and p[:2] == (5, 3) and p[2] >= 0]
