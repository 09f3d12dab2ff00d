"""train.py end to end on janus-tiny: bad input, checkpoints, exact resume, step-0 invariants, learning."""

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import prompts
import train
from generate import rollout
from grpo import grpo_step_loss, masked_mean, policy_term, sample_logprobs, token_logprobs
from reward import group_advantages
from sft import coupling_uniforms
from support import parallel

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["janus-tiny", "showo-tiny"]
SMALL = ["--model", "janus-tiny", "--num-prompts", "40", "--prompts-per-step", "2", "--group-size", "2",
         "--micro-batch", "3", "--max-answer-tokens", "6", "--lr", "1e-3", "--threads", "1"]


def learn(cfg, policy, optimizer, ro, step, advantages=None, keep=None, ref=None):
    """train.learn on one policy (no DDP wrapper), with the objective its mode builds."""
    objective = (train.sft_objective(cfg, policy, ro, keep) if cfg.mode == "sft"
                 else train.grpo_objective(cfg, policy, ro, advantages, ref))
    return train.learn(cfg, policy, policy, optimizer, ro, step, objective, train.guidance_scale(cfg, policy))


def build_batch(cfg, policy, ro, idx=None, cfg_scale=5.0):
    """train.build_batch for GRPO on the rollout's own answers, images `idx` (default all)."""
    idx = torch.arange(len(ro.records)) if idx is None else idx
    return train.build_batch(policy, ro, idx, cfg_scale, train.grpo_objective(cfg, policy, ro, None), cfg.couple)


def test_bad_inputs_fail_before_any_output(tmp_path):
    out = tmp_path / "run"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}\n'
                   '{"tag": "single_object", "include": []\n')
    cases = [
        (["--model", "janus-huge"], "unknown --model"),
        (["--group-size", "1"], "use at least 2"),
        (["--prompts", str(bad)], "line 2"),
        (["--mode", "rl"], "choose one of sft, grpo"),
    ]
    for flags, message in cases:
        with pytest.raises(ValueError, match=message):
            train.main(SMALL + flags + ["--out", str(out)])
        assert not out.exists()
    with pytest.raises(ValueError, match="does not divide over 3 ranks"):
        train.validate(train.parse_config(SMALL + ["--prompts-per-step", "4"]), world=3)
    with pytest.raises(SystemExit):  # unknown flags are errors
        train.parse_config(["--learning-rate", "1"])


def test_geneval_prompts_stay_out_of_training_by_default(tmp_path, monkeypatch):
    """--exclude-prompts auto: GenEval's prompts, shipped in data/, are found from any folder and never train;
    without the file a released model refuses to start, a tiny one trains on everything; none and the shapes
    world skip it."""
    monkeypatch.chdir(tmp_path)
    geneval = {r["prompt"] for r in prompts.read_records(prompts.GENEVAL_METADATA)}
    for model in ("janus-pro-1b", "janus-tiny"):
        cfg = train.parse_config(["--model", model, "--num-prompts", "2000"])
        train.validate(cfg, world=1)
        assert cfg.exclude_prompts == prompts.GENEVAL_METADATA  # resolved, and saved with the run
    kept, _ = train.load_records(cfg)
    assert not geneval & {r["prompt"] for r in kept}
    cfg = train.parse_config(["--model", "janus-tiny", "--num-prompts", "2000", "--exclude-prompts", "none"])
    train.validate(cfg, world=1)
    every, _ = train.load_records(cfg)
    assert len(geneval & {r["prompt"] for r in every}) > 100  # the generator repeats many of them
    assert prompts.exclusion_file("auto", "shapes-janus") is None
    with pytest.raises(ValueError, match="no such file"):
        train.validate(train.parse_config(["--model", "janus-tiny", "--exclude-prompts", "nope.jsonl"]), world=1)
    monkeypatch.setattr(prompts, "GENEVAL_METADATA", str(tmp_path / "gone.jsonl"))  # a checkout without it
    with pytest.raises(ValueError, match="gone.jsonl is missing.*--exclude-prompts none"):
        train.validate(train.parse_config(["--model", "janus-pro-1b"]), world=1)  # before any model loads
    assert prompts.exclusion_file("auto", "janus-tiny") is None


def test_held_out_prompts_never_train(tmp_path, monkeypatch):
    """--eval-every at seed 0 with 48 held-out prompts: the generator repeats prompts, so a positional tail
    shares prompts with the rest; the held-out set shares none (text or content) with training."""
    monkeypatch.chdir(tmp_path)
    cfg = train.parse_config(["--model", "janus-tiny", "--eval-every", "1", "--eval-prompts", "48",
                              "--exclude-prompts", "none"])
    train.validate(cfg, world=1)
    pool = prompts.make_records(cfg.num_prompts, seed=cfg.seed)
    assert {r["prompt"] for r in pool[-48:]} & {r["prompt"] for r in pool[:-48]}, "the premise: the pool repeats"
    training, held_out = train.load_records(cfg)
    keys = {prompts.prompt_key(r) for r in held_out}
    assert len(held_out) == 48 and len(keys) == 48
    assert not keys & {prompts.prompt_key(r) for r in training}
    assert not {r["prompt"] for r in held_out} & {r["prompt"] for r in training}


def test_cli_reports_errors_with_a_nonzero_exit(tmp_path):
    proc = subprocess.run([sys.executable, "train.py", "--model", "nope", "--out", str(tmp_path / "r")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown --model 'nope'" in proc.stderr


def test_nan_loss_stops_the_run():
    with pytest.raises(FloatingPointError, match="not finite"):
        parallel.check_finite(torch.tensor(float("nan")), 3, {})


def weights_of(folder):
    """A checkpoint's trained weights, whatever the family's file name."""
    name = "model.safetensors" if (Path(folder) / "model.safetensors").exists() else "pytorch_model.safetensors"
    return load_file(str(Path(folder) / name))


# GRPO on random weights often sees no reward variance (no gradient), so Show-o resumes an SFT run.
@pytest.mark.parametrize("model,mode", [("janus-tiny", "grpo"), ("showo-tiny", "sft")])
def test_run_checkpoints_and_resumes_exactly(tmp_path, model, mode):
    """4 steps == 2 steps + resume + 2 steps, parameter for parameter; the checkpoint loads as a model."""
    flags = SMALL + ["--model", model, "--mode", mode, "--sft-min-reward", "0", "--inner-iters", "2", "--save-every", "2", "--sample-every", "2",
                     "--grpo-on", "both", "--couple"]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    train.main(flags + ["--steps", "4", "--out", str(straight)])
    train.main(flags + ["--steps", "2", "--out", str(halves)])
    with pytest.raises(ValueError, match="already holds a run"):
        train.main(flags + ["--steps", "2", "--out", str(halves)])
    train.main(["--resume", str(halves), "--steps", "4"])
    a, b = weights_of(straight / "ckpt-000004"), weights_of(halves / "ckpt-000004")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = weights_of(halves / "ckpt-000002")
    assert any(not torch.equal(a[k], start[k]) for k in a), "training changed nothing"
    lines = [json.loads(x) for x in (halves / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    keys = ("gen_kl", "gen_clip_frac", "und_kl") if mode == "grpo" else ("gen_nll", "und_nll", "sft_keep_frac")
    for key in ("reward_mean", "reward_std", "self_qa_acc", "zero_var_frac", "loss", "lr", "seconds",
                "t_rollout", "t_understand", "t_learn") + keys:
        assert key in lines[-1], key
    assert any(k.startswith("reward/") for k in lines[-1])
    assert (halves / "samples" / "step-000004.png").exists()
    from models import load_policy

    back = load_policy(model, str(halves / "ckpt-000004")).model.state_dict()
    assert set(a) <= set(back) and all(torch.equal(back[k], a[k]) for k in a)


@pytest.mark.parametrize("model", FAMILIES)
def test_sft_run_trains_both_paths_and_evaluates(tmp_path, model):
    out = tmp_path / "sft"
    train.main(SMALL + ["--model", model, "--mode", "sft", "--sft-min-reward", "0", "--steps", "1", "--out", str(out),
                        "--eval-every", "1", "--eval-prompts", "2", "--eval-samples", "1"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1] and "eval/self_qa_acc" in lines[0] and "eval/self_qa_acc" in lines[1]
    assert (out / "curves.png").exists()
    line = lines[-1]
    assert line["gen_nll"] > 0 and line["und_nll"] > 0 and line["sft_keep_frac"] > 0
    assert (out / "ckpt-000001" / "optimizer.safetensors").exists()


@pytest.mark.parametrize("model", FAMILIES)
def test_autocast_run_samples_and_trains_in_bf16(tmp_path, model, monkeypatch):
    """--precision bf16's autocast covers the rollout too: every sampling cache (Janus' images and answers,
    Show-o's answers) is stored in bf16, the weights stay fp32, and a GRPO step with a KL term trains with finite
    losses."""
    from models.kv_cache import WindowedStaticCache

    dtypes = []
    real = WindowedStaticCache.advance

    def spy(self, *args):
        dtypes.append((self.layers[0].store_dtype, torch.is_autocast_enabled("cpu")))
        return real(self, *args)

    monkeypatch.setattr(WindowedStaticCache, "advance", spy)
    out = tmp_path / "bf16"
    train.main(SMALL + ["--model", model, "--steps", "1", "--precision", "bf16", "--kl-beta", "0.1", "--out", str(out)])
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(torch.isfinite(torch.tensor(line[k])) for k in ("loss", "gen_kl", "und_kl", "grad_norm"))
    assert dtypes and set(dtypes) == {(torch.bfloat16, True)}  # every cached forward: prefills and steps
    weights = load_file(next((out / "ckpt-000001").rglob("*.safetensors")))
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}


def test_step_zero_ratio_is_one_and_kl_is_zero(fresh_janus, records):
    """The teacher-forced old and reference log-probs make ratio 1 and KL 0 at the first update."""
    import copy

    p = fresh_janus
    cfg = train.Config(group_size=2, kl_beta=0.2, inner_iters=2)
    ro = rollout(p.eval(), records[:2], 2, seed=0, step=0, first_index=0, cfg_scale=5.0)
    ro.und_images = p.encode_images(ro.pixels)
    ro.question_ids, ro.question_mask = p.tokenize_und_prompts([r["question"] for r in ro.records])
    ro.answer_ids, ro.answer_mask = p.tokenize_answers(["two cats"] * 4)
    batch = build_batch(cfg, p, ro)
    old = sample_logprobs(p.train(), batch, cfg.temperature)
    ref = sample_logprobs(copy.deepcopy(p), batch, cfg.temperature)
    out = p(gen=batch["gen"], und=batch["und"])
    _, stats = grpo_step_loss(out, batch, old, ref, torch.tensor([1.0, -1.0, 0.5, -0.5]), cfg)
    for side in ("gen", "und"):
        assert abs(stats[f"{side}_ratio"] - 1) < 1e-6 and stats[f"{side}_kl"] < 1e-9 and stats[f"{side}_clip_frac"] == 0


def test_agreement_trains_answers_on_their_own_advantages(fresh_janus, records):
    """--answer-reward agreement: the answer term reads und_advantages, the image term the image's advantages;
    without them the answer term falls back to the image's (UniRL)."""
    p = fresh_janus
    cfg = train.Config(group_size=2, kl_beta=0.0)
    ro = rollout(p.eval(), records[:2], 2, seed=0, step=0, first_index=0, cfg_scale=5.0)
    ro.und_images = p.encode_images(ro.pixels)
    ro.question_ids, ro.question_mask = p.tokenize_und_prompts([r["question"] for r in ro.records])
    ro.answer_ids, ro.answer_mask = p.tokenize_answers(["two cats"] * 4)
    batch = build_batch(cfg, p, ro)
    image_adv, answer_adv = torch.tensor([1.0, -1.0, 0.5, -0.5]), torch.tensor([0.0, 0.0, 0.0, 0.0])

    def grads(und_advantages):
        p.zero_grad()
        out = p(gen=batch["gen"], und=batch["und"])
        loss, _ = grpo_step_loss(out, batch, None, None, image_adv, cfg, und_advantages=und_advantages)
        loss.sum().backward()
        return [q.grad.clone() if q.grad is not None else torch.zeros_like(q) for q in p.parameters()]

    und_only = build_batch(train.Config(group_size=2, kl_beta=0.0, grpo_on="und"), p, ro)
    out = p(und=und_only["und"])
    zero, _ = grpo_step_loss(out, und_only, None, None, image_adv, cfg, und_advantages=answer_adv)
    assert float(zero.detach().abs().sum()) == 0.0  # zero answer advantages: no answer loss, whatever the image's
    fallback, _ = grpo_step_loss(out, und_only, None, None, image_adv, cfg)
    assert float(fallback.detach().abs().sum()) > 0  # UniRL: the answers share the image's advantages
    with_votes, without = grads(answer_adv), grads(None)
    assert any(not torch.equal(a, b) for a, b in zip(with_votes, without))


def test_und_weight_scales_the_answer_term_alone(fresh_janus, records):
    """--und-weight w: GRPO on both is the image term plus w times the answer term (UniRL's sum at w = 1);
    it is refused where only one of the terms trains."""
    p = fresh_janus
    ro = rollout(p.eval(), records[:2], 2, seed=0, step=0, first_index=0, cfg_scale=5.0)
    ro.und_images = p.encode_images(ro.pixels)
    ro.question_ids, ro.question_mask = p.tokenize_und_prompts([r["question"] for r in ro.records])
    ro.answer_ids, ro.answer_mask = p.tokenize_answers(["two cats", "one cat", "two cats", "three cats"])
    # the answers get advantages of their own, so the two terms differ and a weight on the wrong one shows
    adv, answer_adv = torch.tensor([1.0, -1.0, 0.5, -0.5]), torch.tensor([0.25, 2.0, -1.0, 0.0])
    losses = {}
    for on, weight in (("gen", 1.0), ("und", 1.0), ("both", 1.0), ("both", 0.25)):
        cfg = train.Config(group_size=2, kl_beta=0.0, grpo_on=on, und_weight=weight)
        batch = build_batch(cfg, p, ro)
        with torch.no_grad():
            losses[on, weight] = grpo_step_loss(p(gen=batch.get("gen"), und=batch.get("und")), batch, None, None,
                                                adv, cfg, und_advantages=answer_adv)[0]
    gen, und = losses["gen", 1.0], losses["und", 1.0]
    assert und.abs().sum() > 0 and gen.abs().sum() > 0 and not torch.allclose(gen, und)
    assert torch.allclose(losses["both", 1.0], gen + und, atol=1e-6)
    assert torch.allclose(losses["both", 0.25], gen + 0.25 * und, atol=1e-6)
    for flags in (["--grpo-on", "gen"], ["--grpo-on", "und"], ["--mode", "sft"]):
        with pytest.raises(ValueError, match="--und-weight 0.5 weighs.*pass --und-weight 1"):
            train.validate(train.parse_config(SMALL + flags + ["--und-weight", "0.5"]), world=1)


@pytest.mark.parametrize("model", FAMILIES)
def test_grpo_raises_a_fixed_synthetic_reward(records, model):
    """Twenty GRPO steps on image tokens raise the share of tokens from the codebook's first eighth."""
    from models import load_policy

    p = load_policy(model)
    cfg = train.Config(group_size=8, grpo_on="gen", kl_beta=0.0, lr=3e-3, micro_batch=16, grad_clip=0)
    optimizer = torch.optim.AdamW([q for q in p.parameters() if q.requires_grad], lr=cfg.lr)
    target = p.codebook_size // 8
    means = []
    for step in range(20):  # 12 steps left the rise within rounding of the bar on some CPUs (+0.09 on one)
        ro = rollout(p.eval(), records[:2], cfg.group_size, seed=0, step=step, first_index=0, cfg_scale=5.0)
        rewards = (ro.image_ids < target).float().mean(1)  # (N,) the synthetic reward
        means.append(rewards.mean().item())
        advantages = group_advantages(rewards.view(2, -1)).view(-1)
        learn(cfg, p.train(), optimizer, ro, step, advantages=advantages)
    assert sum(means[-3:]) / 3 > sum(means[:3]) / 3 + 0.1, means


def test_agreement_votes_and_advantages_through_train_step(fresh_janus, records, monkeypatch):
    """--answer-reward agreement end to end in one step: every image gets --votes answers drawn from streams other
    than its trained answer's, and the answer tokens' advantages are the agreement's, normalised per prompt group,
    across micro-batches smaller than the rank's images."""
    seen, fixed = {}, [1.0, 0.0, 2 / 3, 1 / 3, 0.0, 0.0, 1.0, 1 / 3]  # a random tiny model rarely agrees with itself
    monkeypatch.setattr(train.reward, "agreement", lambda answers, votes: seen.update(votes=votes) or fixed)
    real = train.grpo_objective
    monkeypatch.setattr(train, "grpo_objective", lambda cfg, policy, ro, adv, ref=None, und=None:
                        seen.update(ro=ro, adv=adv, und=und) or real(cfg, policy, ro, adv, ref, und))
    cfg = train.Config(group_size=4, prompts_per_step=2, kl_beta=0.0, max_answer_tokens=4, answer_reward="agreement",
                       votes=3, micro_batch=3, lr=0.0)
    optimizer = torch.optim.SGD(fresh_janus.parameters(), lr=0.0)
    stats, ro = train.train_step(0, cfg, fresh_janus, fresh_janus, None, optimizer, records, 0, 1)
    assert len(ro.votes) == 8 and all(len(v) == 3 for v in ro.votes)
    assert any(v != [a] * 3 for a, v in zip(ro.answers, ro.votes)), "votes should be fresh samples, not copies"
    assert seen["votes"] is ro.votes
    want = train.reward.group_advantages(torch.tensor(fixed).view(2, 4))
    assert torch.equal(seen["und"], want.view(-1)) and not torch.equal(seen["und"], seen["adv"])
    assert 0.0 <= stats["answer_agreement"] <= 1.0


def test_judged_answers_train_only_about_passed_images(fresh_janus, records, monkeypatch):
    """--answer-reward judged (a diagnostic): the answer tokens' advantages are the prompt's reward normalised among
    the images the judge passes, 0 for the others; the image tokens keep the whole group's advantages."""
    scores = [1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0, 0.5]
    passed = [True, True, False, False, True, True, True, False]
    monkeypatch.setattr(train.reward, "score_answers", lambda answers, recs: scores)
    monkeypatch.setattr(train.shapes, "judge_pixels", lambda recs, px: passed)
    seen, real = {}, train.grpo_objective
    monkeypatch.setattr(train, "grpo_objective", lambda cfg, policy, ro, adv, ref=None, und=None:
                        seen.update(adv=adv, und=und) or real(cfg, policy, ro, adv, ref, und))
    cfg = train.Config(group_size=4, prompts_per_step=2, kl_beta=0.0, max_answer_tokens=4, answer_reward="judged",
                       lr=0.0)
    optimizer = torch.optim.SGD(fresh_janus.parameters(), lr=0.0)
    stats, _ = train.train_step(0, cfg, fresh_janus, fresh_janus, None, optimizer, records, 0, 1)
    assert torch.equal(seen["adv"], group_advantages(torch.tensor(scores).view(2, 4)).view(-1))
    half = 1 / math.sqrt(2)
    want = torch.tensor([1.0, -1.0, 0.0, 0.0, -math.sqrt(2), half, half, 0.0])
    assert torch.allclose(seen["und"], want, atol=1e-5), seen["und"]
    assert stats["answer_judged_frac"] == 5 / 8


def test_gated_answers_train_only_about_images_the_votes_read_as_the_prompt(fresh_janus, records, monkeypatch):
    """--answer-reward gated: --votes more answers per image are drawn, and the answer tokens' advantages are the
    prompt's reward normalised among the images most votes read as the prompt, 0 for the others."""
    scores = [1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0, 0.5]
    read = [True, True, False, False, True, True, True, False]
    monkeypatch.setattr(train.reward, "score_answers", lambda answers, recs: scores)
    seen, real = {}, train.grpo_objective
    monkeypatch.setattr(train.reward, "reads_as_prompt", lambda votes, recs: seen.update(votes=votes) or read)
    monkeypatch.setattr(train, "grpo_objective", lambda cfg, policy, ro, adv, ref=None, und=None:
                        seen.update(adv=adv, und=und) or real(cfg, policy, ro, adv, ref, und))
    cfg = train.Config(group_size=4, prompts_per_step=2, kl_beta=0.0, max_answer_tokens=4, answer_reward="gated",
                       votes=3, lr=0.0)
    optimizer = torch.optim.SGD(fresh_janus.parameters(), lr=0.0)
    stats, ro = train.train_step(0, cfg, fresh_janus, fresh_janus, None, optimizer, records, 0, 1)
    assert seen["votes"] is ro.votes and len(ro.votes) == 8 and all(len(v) == 3 for v in ro.votes)
    # the votes are draws of their own: the images and the trained answers are those of a run without them
    plain, _ = train.sample_and_answer(0, train.Config(**{**vars(cfg), "answer_reward": "prompt"}), fresh_janus.eval(),
                                       ro.records[::4], 0, train.guidance_scale(cfg, fresh_janus))
    assert plain.votes is None
    assert torch.equal(ro.image_ids, plain.image_ids) and ro.answers == plain.answers
    assert torch.equal(seen["adv"], group_advantages(torch.tensor(scores).view(2, 4)).view(-1))
    half = 1 / math.sqrt(2)
    want = torch.tensor([1.0, -1.0, 0.0, 0.0, -math.sqrt(2), half, half, 0.0])
    assert torch.allclose(seen["und"], want, atol=1e-5), seen["und"]
    assert stats["answer_gated_frac"] == 5 / 8 and "answer_agreement" not in stats


def test_image_baseline_answers_draw_votes_and_subtract_their_mean(fresh_janus, records, monkeypatch):
    """--answer-reward image-baseline: --votes more answers per image are drawn apart from the trained ones (the
    images and trained answers are a plain run's), each scored against its image's record with the run's credit; the
    answer tokens get image_baseline_advantages of those scores, the image tokens UniRL's own advantages."""
    def score(answers, recs):  # a random model's answers all score 0 against the truth: a score that varies
        assert len(answers) == len(recs)
        return [(len(answer) + ord(answer[0] if answer else "a")) % 3 / 2 for answer in answers]
    monkeypatch.setattr(train.reward, "score_answers", score)
    seen, real = {}, train.grpo_objective
    monkeypatch.setattr(train, "grpo_objective", lambda cfg, policy, ro, adv, ref=None, und=None:
                        seen.update(adv=adv, und=und) or real(cfg, policy, ro, adv, ref, und))
    cfg = train.Config(group_size=4, prompts_per_step=2, kl_beta=0.0, max_answer_tokens=4, votes=3, lr=0.0,
                       answer_reward="image-baseline", reward_credit="all", answer_temperature=1.0)
    optimizer = torch.optim.SGD(fresh_janus.parameters(), lr=0.0)
    stats, ro = train.train_step(0, cfg, fresh_janus, fresh_janus, None, optimizer, records, 0, 1)
    assert len(ro.votes) == 8 and all(len(v) == 3 for v in ro.votes)
    plain, _ = train.sample_and_answer(0, train.Config(**{**vars(cfg), "answer_reward": "prompt"}), fresh_janus.eval(),
                                       ro.records[::4], 0, train.guidance_scale(cfg, fresh_janus))
    assert torch.equal(ro.image_ids, plain.image_ids) and ro.answers == plain.answers
    # the votes are about each row's own image, from streams of their own (none repeats the trained answers' stream)
    again = train.sample_votes(fresh_janus, ro.und_images, [r["question"] for r in ro.records], 3, seed=cfg.seed,
                               step=0, first_index=0, max_new_tokens=4, temperature=1.0)
    assert ro.votes == again
    assert all(any(v[k] != a for v, a in zip(ro.votes, ro.answers)) for k in range(3))
    assert ro.rewards.tolist() == [float(s == 1.0) for s in score(ro.answers, ro.records)]  # the run's credit
    scored = [[float(s == 1.0) for s in score(vs, [r] * 3)] for vs, r in zip(ro.votes, ro.records)]
    want = train.reward.image_baseline_advantages(ro.rewards.view(2, 4), torch.tensor(scored).view(2, 4, 3)).view(-1)
    assert want.ne(0).any() and torch.equal(seen["und"], want)
    assert torch.equal(seen["adv"], group_advantages(ro.rewards.view(2, 4)).view(-1))
    assert stats["und_signal_frac"] == (want != 0).float().mean().item()
    assert stats["und_adv_abs"] == pytest.approx(want.abs().mean().item())


def test_answer_keep_trains_a_random_share_of_the_answers(fresh_janus, records, monkeypatch):
    """--answer-keep p: per step, each answer joins the answer term with probability p, advantages normalised among
    the drawn ones; the image term keeps the whole group's advantages; the draw changes with the step."""
    scores = [1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0, 0.5]
    monkeypatch.setattr(train.reward, "score_answers", lambda answers, recs: scores)
    seen, real = [], train.reward.kept_group_advantages
    monkeypatch.setattr(train.reward, "kept_group_advantages", lambda r, keep: seen.append(keep) or real(r, keep))
    got, objective = [], train.grpo_objective
    monkeypatch.setattr(train, "grpo_objective", lambda cfg, policy, ro, adv, ref=None, und=None:
                        got.append((adv, und)) or objective(cfg, policy, ro, adv, ref, und))
    cfg = train.Config(group_size=4, prompts_per_step=2, kl_beta=0.0, max_answer_tokens=4, answer_keep=0.5, lr=0.0)
    optimizer = torch.optim.SGD(fresh_janus.parameters(), lr=0.0)
    for step in range(8):
        train.train_step(step, cfg, fresh_janus, fresh_janus, None, optimizer, records, 0, 1)
    whole = group_advantages(torch.tensor(scores).view(2, 4)).view(-1)
    for keep, (adv, und) in zip(seen, got):
        assert torch.equal(adv, whole)
        assert torch.equal(und, real(torch.tensor(scores).view(2, 4), keep).view(-1))
    kept = torch.stack(seen).float()
    assert 0.3 < kept.mean() < 0.7 and len({tuple(k.view(-1).tolist()) for k in seen}) > 4


def test_judge_pixels_reads_the_rendered_boards():
    """shapes.judge_pixels (--answer-reward judged): the exact judge on each image's pixels (decoded by the world's
    codec, as a rollout's are), paired with its own record, in order."""
    import shapes
    from shapes.models import ShapesCodec

    two, three = shapes.world_records("counting")[:2]
    rng = random.Random(0)
    boards = torch.stack([shapes.sample_scene(two, rng), shapes.sample_scene(three, rng), shapes.sample_scene(two, rng)])
    assert two["include"] != three["include"]
    verdicts = shapes.judge_pixels([two, two, three], ShapesCodec().decode(boards))
    assert verdicts == [True, False, False]  # the second board shows `three`, the third `two`


def test_judged_shuffled_keeps_as_many_answers_per_group_at_random(fresh_janus, records, monkeypatch):
    """--answer-reward judged-shuffled, the judged diagnostic's control: per group, as many answers carry an
    advantage as the judge passes, but drawn at random (seeded by step), not the judge's."""
    scores = [1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0, 0.5]
    passed = [True, True, False, False, True, True, True, False]
    monkeypatch.setattr(train.reward, "score_answers", lambda answers, recs: scores)
    monkeypatch.setattr(train.shapes, "judge_pixels", lambda recs, px: passed)
    seen, real = [], train.reward.kept_group_advantages
    monkeypatch.setattr(train.reward, "kept_group_advantages", lambda r, keep: seen.append(keep) or real(r, keep))
    cfg = train.Config(group_size=4, prompts_per_step=2, kl_beta=0.0, max_answer_tokens=4,
                       answer_reward="judged-shuffled", lr=0.0)
    optimizer = torch.optim.SGD(fresh_janus.parameters(), lr=0.0)
    for step in range(6):
        train.train_step(step, cfg, fresh_janus, fresh_janus, None, optimizer, records, 0, 1)
    judged = torch.tensor(passed).view(2, 4)
    assert all(torch.equal(keep.sum(1), judged.sum(1)) for keep in seen)
    assert any(not torch.equal(keep, judged) for keep in seen) and not all(torch.equal(k, seen[0]) for k in seen)


def test_counted_keeps_as_many_answers_per_group_as_earn_the_full_reward(fresh_janus, records, monkeypatch):
    """--answer-reward counted: per group, as many answers carry an advantage as earn the full reward (partial
    credit does not count), drawn at random per step and per rank; a group with one such answer trains none."""
    scores = [1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 0.5, 0.5]  # group 0: two full rewards, group 1: one
    monkeypatch.setattr(train.reward, "score_answers", lambda answers, recs: scores)
    seen, real = [], train.reward.kept_group_advantages
    monkeypatch.setattr(train.reward, "kept_group_advantages", lambda r, keep: seen.append(keep) or real(r, keep))
    got, objective = [], train.grpo_objective
    monkeypatch.setattr(train, "grpo_objective", lambda cfg, policy, ro, adv, ref=None, und=None:
                        got.append(und) or objective(cfg, policy, ro, adv, ref, und))
    cfg = train.Config(group_size=4, prompts_per_step=2, kl_beta=0.0, max_answer_tokens=4, answer_reward="counted",
                       lr=0.0)
    optimizer = torch.optim.SGD(fresh_janus.parameters(), lr=0.0)
    for step in range(6):
        stats, _ = train.train_step(step, cfg, fresh_janus, fresh_janus, None, optimizer, records, 0, 1)
        assert stats["answer_counted_frac"] == 3 / 8
    assert all(keep.sum(1).tolist() == [2, 1] for keep in seen)
    assert not all(torch.equal(k, seen[0]) for k in seen)  # drawn anew each step
    assert all(und[4:].eq(0).all() for und in got)  # one kept answer: no signal
    assert any(und[:4].ne(0).any() for und in got)  # two kept answers that differ: a signal



@pytest.mark.parametrize("flags", [dict(answer_reward="counted"), dict(answer_keep=0.5),
                                   dict(answer_reward="judged-shuffled")])
def test_drawn_answers_do_not_depend_on_the_number_of_ranks(fresh_janus, records, monkeypatch, flags):
    """The answers that --answer-reward counted, --answer-keep and judged-shuffled draw are the same on one process
    and on two ranks (each rank takes its groups' rows of one draw over the step's batch), and differ by group."""
    monkeypatch.setattr(train.reward, "score_answers", lambda answers, recs: [1.0, 0.0, 1.0, 0.5] * (len(answers) // 4))
    monkeypatch.setattr(train.shapes, "judge_pixels", lambda recs, px: [True, False, True, True] * (len(recs) // 4))
    seen, real = [], train.reward.kept_group_advantages
    monkeypatch.setattr(train.reward, "kept_group_advantages", lambda r, keep: seen.append(keep) or real(r, keep))
    cfg = train.Config(group_size=4, prompts_per_step=4, kl_beta=0.0, max_answer_tokens=4, lr=0.0, **flags)
    optimizer = torch.optim.SGD(fresh_janus.parameters(), lr=0.0)
    for rank, world in ((0, 1), (0, 2), (1, 2)):
        train.train_step(3, cfg, fresh_janus, fresh_janus, None, optimizer, records, rank, world)
    one, two = seen[0], torch.cat(seen[1:])
    assert one.shape == (4, 4) and torch.equal(one, two)
    assert len({tuple(row.tolist()) for row in one}) > 1  # each group its own draw


@pytest.mark.parametrize("credit, want", [("partial", [0.5, 1.0, 0.25, 0.0]), ("all", [0.0, 1.0, 0.0, 0.0])])
def test_reward_credit_all_pays_only_fully_right_answers(fresh_janus, records, monkeypatch, credit, want):
    """--reward-credit all: the rewards GRPO sees are 1 for a fully right answer and 0 otherwise."""
    monkeypatch.setattr(train.reward, "score_answers", lambda answers, recs: [0.5, 1.0, 0.25, 0.0])
    cfg = train.Config(group_size=2, prompts_per_step=2, kl_beta=0.0, max_answer_tokens=4, reward_credit=credit,
                       lr=0.0)
    optimizer = torch.optim.SGD(fresh_janus.parameters(), lr=0.0)
    _, ro = train.train_step(0, cfg, fresh_janus, fresh_janus, None, optimizer, records, 0, 1)
    assert ro.rewards.tolist() == want


def test_couple_without_an_answer_loss_is_refused():
    for flags in (["--grpo-on", "gen", "--couple"], ["--mode", "sft", "--sft-on", "gen", "--couple"]):
        with pytest.raises(ValueError, match="--couple carries the answer loss.*trains no answers"):
            train.validate(train.parse_config(SMALL + flags), world=1)


@pytest.mark.parametrize("mode", ["grpo", "sft"])
def test_couple_trains_generation_only_through_the_answer_loss(fresh_janus, records, mode):
    """und + --couple: no loss term on image tokens (no gen_* statistics), and every gradient, generation's
    included, is the answer loss's through the straight-through tokens. und alone: generation gets none."""
    p = fresh_janus
    cfg = train.Config(mode=mode, grpo_on="und", sft_on="und", couple=True, group_size=2, kl_beta=0.0,
                       max_answer_tokens=6, grad_clip=0, micro_batch=8)
    ro, _ = train.sample_and_answer(0, cfg, p.eval(), records[:2], 0, 5.0)
    advantages, keep = torch.tensor([1.0, -1.0, 0.5, -0.5]), torch.ones(4)
    optimizer = torch.optim.SGD(p.parameters(), lr=0.0)  # the gradients stay readable, the weights unchanged
    stats = learn(cfg, p.train(), optimizer, ro, 0, keep=keep, advantages=advantages)
    assert not [k for k in stats if k.startswith("gen_")], stats
    got = {name: q.grad.clone() for name, q in p.named_parameters() if q.grad is not None}
    head = "model.model.generation_head.vision_head.weight"
    assert got[head].abs().sum() > 0  # generation trains, through the coupling
    # the same gradients from the answer loss alone, through the coupled forward built by hand
    p.zero_grad(set_to_none=True)
    if mode == "grpo":
        answer_ids, answer_mask = ro.answer_ids, ro.answer_mask
    else:  # SFT learns the true answers
        answer_ids, answer_mask = p.tokenize_answers([r["answer"] for r in ro.records])
    gen = dict(prompt_ids=ro.prompt_ids, prompt_mask=ro.prompt_mask, image_ids=ro.image_ids,
               cfg_scale=5.0 if mode == "grpo" else None)
    und = dict(images=ro.und_images, prompt_ids=ro.question_ids, prompt_mask=ro.question_mask,
               answer_ids=answer_ids, answer_mask=answer_mask)
    noise = coupling_uniforms(cfg.seed, 0, ro.image_ids, torch.arange(4), p.codebook_size)
    logp = token_logprobs(p(gen=gen, und=und, couple=dict(tau=cfg.gumbel_tau, noise=noise))["und_logits"], answer_ids)
    if mode == "grpo":
        per_sample, _ = policy_term(logp, logp.detach(), None, advantages, answer_mask, cfg.clip_eps, 0.0)
    else:
        per_sample = masked_mean(-logp, answer_mask, dim=1)
    (per_sample.sum() / 4).backward()
    want = {name: q.grad for name, q in p.named_parameters() if q.grad is not None}
    assert got.keys() == want.keys()
    assert all(torch.allclose(got[k], want[k], atol=1e-7, rtol=1e-4) for k in got), \
        [k for k in got if not torch.allclose(got[k], want[k], atol=1e-7, rtol=1e-4)]
    # without --couple, the answer loss never reaches generation
    p.zero_grad(set_to_none=True)
    learn(train.Config(**{**cfg.__dict__, "couple": False}), p, optimizer, ro, 0, keep=keep, advantages=advantages)
    assert dict(p.named_parameters())[head].grad is None


def test_answers_are_scored_at_the_temperature_they_were_sampled_at(fresh_janus, records, monkeypatch):
    """--answer-temperature 0.7: the old log-probs GRPO computes for the answer tokens are the sampler's, at
    0.7, and the loss scores at the same temperature (ratio exactly 1, KL 0 while the weights do not move)."""
    import copy

    import grpo

    p = fresh_janus
    cfg = train.Config(grpo_on="und", group_size=2, answer_temperature=0.7, max_answer_tokens=6, inner_iters=2,
                       kl_beta=0.1, micro_batch=8)
    seen, real_step = [], p.und_step
    monkeypatch.setattr(p, "und_step", lambda *a, **k: seen.append(real_step(*a, **k)) or seen[-1])
    ro, _ = train.sample_and_answer(0, cfg, p.eval(), records[:2], 0, 5.0)
    monkeypatch.undo()
    steps = torch.stack(seen, 1)[:, : ro.answer_ids.shape[1]]  # (N, A, V) the logits each answer token was drawn from
    sampled = torch.log_softmax(steps / 0.7, -1).gather(-1, ro.answer_ids[..., None])[..., 0]
    assert (ro.answer_ids != steps.argmax(-1))[ro.answer_mask.bool()].any(), "the answers should be sampled, not greedy"
    logps, real_logprobs = [], grpo.sample_logprobs
    monkeypatch.setattr(train, "sample_logprobs", lambda *a, **k: logps.append(real_logprobs(*a, **k)) or logps[-1])
    optimizer = torch.optim.SGD(p.parameters(), lr=0.0)
    stats = learn(cfg, p.train(), optimizer, ro, 0, advantages=torch.tensor([1.0, -1.0, 0.5, -0.5]),
                  ref=copy.deepcopy(p).eval())
    old = logps[0]["und"]  # the policy's teacher-forced pass, before any update
    assert (old - sampled)[ro.answer_mask.bool()].abs().max() < 1e-5
    assert abs(stats["und_ratio"] - 1) < 1e-6 and stats["und_kl"] < 1e-9


def test_logged_grad_norm_is_the_mean_over_inner_iterations(fresh_janus, records, monkeypatch):
    """With mu = 2 the logged grad_norm is the mean of the two updates' norms, not the last one halved."""
    norms = iter([3.0, 5.0])
    monkeypatch.setattr(train, "clip_grads", lambda params, max_norm: next(norms))
    p = fresh_janus
    cfg = train.Config(group_size=2, grpo_on="gen", kl_beta=0.0, inner_iters=2, micro_batch=4)
    ro = rollout(p.eval(), records[:2], 2, seed=0, step=0, first_index=0, cfg_scale=5.0)
    optimizer = torch.optim.AdamW([q for q in p.parameters() if q.requires_grad], lr=1e-5)
    stats = learn(cfg, p.train(), optimizer, ro, 0, advantages=torch.tensor([1.0, -1.0, 0.5, -0.5]))
    assert stats["grad_norm"] == 4.0
