"""The shapes world end to end: the exact codec, pretraining, the cache, save/load, evaluation, and a short
UniRL run that raises the reward. Small models and budgets, pretrained once per session in a temporary
cache (UNIRL_CACHE), so nothing touches ~/.cache."""

import os
import random
from pathlib import Path

import pytest
import torch

from shapes import pretrain
import shapes
import train
from evaluate import evaluate_world, format_table
from shapes.models import ShapesCodec, build_shapes_janus, build_shapes_showo
from shapes.pretrain import load_shapes_policy

TINY = dict(steps=300, batch=16, warmup=20)  # ~15 s on one core: a weak but real base
TINY_SHOWO = dict(family="showo", steps=60, batch=8, warmup=5, hidden=32, layers=1)  # ~5 s: only has to run


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory):
    """A temporary UNIRL_CACHE for the session's pretrained bases."""
    old = os.environ.get("UNIRL_CACHE")
    os.environ["UNIRL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield Path(os.environ["UNIRL_CACHE"])
    finally:
        if old is None:
            del os.environ["UNIRL_CACHE"]
        else:
            os.environ["UNIRL_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_base(world_cache):
    """A tiny pretrained Janus base, written through the cache."""
    return pretrain.cached_base(pretrain.PretrainConfig(**TINY))


@pytest.fixture(scope="session")
def tiny_showo_base(world_cache):
    """A tiny pretrained Show-o base, written through the same cache."""
    return pretrain.cached_base(pretrain.PretrainConfig(**TINY_SHOWO))


# ---------------------------------------------------------------------------------------------- codec
def test_codec_round_trip_is_exact():
    codec = ShapesCodec()
    codes = torch.randint(0, shapes.NUM_CODES, (64, shapes.NUM_CELLS), generator=torch.Generator().manual_seed(0))
    pixels = codec.decode(codes)
    assert pixels.shape == (64, 3, shapes.SIZE, shapes.SIZE) and 0 <= pixels.min() and pixels.max() <= 1
    assert torch.equal(pixels, shapes.render_tensor(codes))  # decode = render
    assert torch.equal(shapes.parse_image(pixels), codes) and torch.equal(codec.encode(pixels), codes)  # parse inverts it
    onehot = torch.nn.functional.one_hot(codes, shapes.NUM_CODES).float().requires_grad_()
    soft = codec.decode_onehot(onehot)
    assert torch.equal(soft, pixels)  # the coupling path sees exactly the rollout's image
    soft.sum().backward()  # and it is differentiable: d(pixel sum)/d(onehot[code]) = that tile's pixel sum
    tiles = torch.from_numpy(shapes.code_tiles()).float().div(255).reshape(shapes.NUM_CODES, -1)
    assert torch.allclose(onehot.grad[0, 0], tiles.sum(1))
    assert codec.decode_onehot(onehot.detach().double()).dtype == torch.float64  # tiles follow the input's dtype


def test_scene_answers_score_full_marks():
    import reward

    rng = random.Random(0)
    for record in shapes.make_shape_records(300, seed=3):
        codes = shapes.sample_scene(record, rng)
        assert reward.score_answer(shapes.scene_answer(record, codes), record) == 1.0, record["prompt"]


# ---------------------------------------------------------------------------------------------- pretraining
def test_pretraining_lowers_both_losses():
    _, history = pretrain.pretrain(pretrain.PretrainConfig(steps=40, batch=8, warmup=5, hidden=32, layers=1), log_every=0)
    first, last = history[:5], history[-5:]
    for key in ("gen_nll", "und_nll"):
        assert sum(h[key] for h in last) < 0.5 * sum(h[key] for h in first), key


def test_cache_is_reused_and_keyed_by_settings(tiny_base, capsys):
    assert tiny_base.parent == Path(os.environ["UNIRL_CACHE"]) / "shapes"
    assert (tiny_base / "config.json").exists() and (tiny_base / "pretrain_config.json").exists()
    again = pretrain.cached_base(pretrain.PretrainConfig(**TINY))
    assert again == tiny_base and "loading the cached" in capsys.readouterr().out
    assert pretrain.PretrainConfig(**TINY, seed=1).key() != pretrain.PretrainConfig(**TINY).key()
    assert not any(p.name.startswith(".") for p in tiny_base.parent.iterdir())  # no temporary folder left
    with pytest.raises(ValueError, match="not a pretrained shapes base"):  # --out never deletes other folders
        pretrain.save_base(None, pretrain.PretrainConfig(), [], tiny_base.parent.parent)


# ---------------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_is_exact_and_keeps_the_codec(tmp_path):
    policy = build_shapes_janus(seed=3, hidden=32, layers=1)
    policy.save(tmp_path / "p")
    back = load_shapes_policy("shapes-janus", str(tmp_path / "p"))
    assert isinstance(back.codec, ShapesCodec)
    a, b = policy.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    questions = [r["question"] for r in shapes.eval_records(1)]
    assert torch.equal(policy.tokenize_und_prompts(questions)[0], back.tokenize_und_prompts(questions)[0])
    codes = torch.randint(0, shapes.NUM_CODES, (2, shapes.NUM_CELLS))
    assert torch.equal(back.decode_images(codes), shapes.render_tensor(codes))
    with pytest.raises(ValueError, match="unknown shapes preset"):
        load_shapes_policy("shapes-dalle", str(tmp_path / "p"))


def test_non_shapes_folder_is_refused(tmp_path):
    from models import load_policy

    load_policy("janus-tiny").save(tmp_path / "tiny")
    with pytest.raises(ValueError, match="not a shapes-world Janus"):
        load_shapes_policy("shapes-janus", str(tmp_path / "tiny"))


# ---------------------------------------------------------------------------------------------- evaluation
def test_evaluate_world_reports_every_metric(tiny_base):
    policy = load_shapes_policy("shapes-janus", str(tiny_base))
    records = shapes.eval_records(2)
    result = evaluate_world(policy, records, n_samples=2, cfg_scale=3.0, seed=0)
    assert result["images"] == 2 * len(records)
    for tag in shapes.TAGS:
        assert 0 <= result[f"geneval/{tag}"] <= 1 and 0 <= result[f"und/{tag}"] <= 1
    assert result["geneval"] == pytest.approx(sum(result[f"geneval/{t}"] for t in shapes.TAGS) / 6)
    assert result["imbalance"] == pytest.approx(result["imbalance/judge_only"] + result["imbalance/answer_only"])
    assert evaluate_world(policy, records, n_samples=2, cfg_scale=3.0, seed=0)["geneval"] == result["geneval"]  # seeded
    table = format_table(result, result)
    assert "judge: overall (GenEval)" in table and "+0.000" in table


# ---------------------------------------------------------------------------------------------- UniRL learns
def test_short_grpo_run_raises_the_reward(tiny_base):
    """40 GRPO steps (images and answers) on 8 prompts raise the reward of fresh, seeded samples."""
    import reward
    from generate import rollout
    from understand import answer_questions

    policy = load_shapes_policy("shapes-janus", str(tiny_base))
    records = shapes.make_shape_records(8, seed=1)  # all six tags

    def mean_reward():
        ro = rollout(policy.eval(), records, 8, seed=99, step=0, first_index=0, cfg_scale=3.0)
        *_, answers = answer_questions(policy, policy.encode_images(ro.pixels), [r["question"] for r in ro.records],
                                       max_new_tokens=12)
        return sum(reward.score_answers(answers, ro.records)) / len(answers)

    cfg = train.Config(model="shapes-janus", prompts_per_step=4, group_size=8, grpo_on="both", kl_beta=0.0, lr=3e-4,
                       micro_batch=32, cfg_scale=3.0, max_answer_tokens=12)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr)
    before = mean_reward()
    for step in range(40):
        train.train_step(step, cfg, policy, policy, None, optimizer, records, 0, 1)
    after = mean_reward()
    assert after > before + 0.05, (before, after)


def test_train_py_runs_the_world_and_its_checkpoint_loads(tiny_base, tmp_path):
    from models import load_policy

    out = tmp_path / "run"
    train.main(["--model", "shapes-janus", "--model-path", str(tiny_base), "--steps", "2", "--num-prompts", "24",
                "--prompts-per-step", "2", "--group-size", "2", "--max-answer-tokens", "8", "--threads", "1",
                "--cfg-scale", "3", "--out", str(out)])
    back = load_policy("shapes-janus", str(out / "ckpt-000002"))
    assert isinstance(back.codec, ShapesCodec) and back.num_image_tokens == shapes.NUM_CELLS == 16
    assert back.codebook_size == shapes.NUM_CODES


def test_evaluate_py_shapes_reproduces_the_runs_last_evaluation(tiny_base, tmp_path):
    import json

    import evaluate

    out = tmp_path / "run"
    train.main(["--model", "shapes-janus", "--model-path", str(tiny_base), "--steps", "1", "--num-prompts", "200",
                "--prompts-per-step", "2", "--group-size", "2", "--max-answer-tokens", "8", "--threads", "1",
                "--eval-samples", "1", "--seed", "5", "--out", str(out)])
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    evaluate.main(["--model", "shapes-janus", "--shapes", "--model-path", str(out / "ckpt-000001"),
                   "--threads", "1", "--out", str(tmp_path / "eval")])
    record = json.loads((tmp_path / "eval" / "results.json").read_text())
    # the run's own settings, not evaluate.py's GenEval defaults: 1 image, answers of 8 tokens, seed 5 + 3
    assert {k: record["settings"][k] for k in ("n_samples", "max_answer_tokens", "seed", "cfg_scale")} == \
        {"n_samples": 1, "max_answer_tokens": 8, "seed": 8, "cfg_scale": 3.0}
    assert record["images"] == 6 * shapes.EVAL_PER_TAG
    for key in ("geneval", "self_qa", "und", "imbalance", *(f"geneval/{t}" for t in shapes.TAGS)):
        assert record["scores"][key] == last[f"eval/{key}"], key  # the same images, judged the same
    evaluate.main(["--model", "shapes-janus", "--shapes", "--model-path", str(out / "ckpt-000001"), "--per-tag", "2",
                   "--n-samples", "2", "--threads", "1", "--out", str(tmp_path / "eval2")])
    assert json.loads((tmp_path / "eval2" / "results.json").read_text())["images"] == 6 * 2 * 2  # flags win
    with pytest.raises(ValueError, match="use --model shapes-janus or shapes-showo"):
        evaluate.main(["--model", "janus-tiny", "--shapes"])
    with pytest.raises(ValueError, match="pass one of them"):
        evaluate.main(["--model", "shapes-janus", "--shapes", "--geneval"])
    with pytest.raises(ValueError, match="evaluate it with --shapes"):
        evaluate.main(["--model", "shapes-showo", "--geneval"])


# ---------------------------------------------------------------------------------------------- Show-o's family
def test_showo_world_policy_has_the_world_sizes_and_shows_o_layout():
    policy = build_shapes_showo(seed=0, hidden=32, layers=1)
    c = policy.config
    assert (policy.family, policy.decoding) == ("showo", "masked") and policy.vq is None
    assert (policy.num_image_tokens, policy.codebook_size) == (shapes.NUM_CELLS, shapes.NUM_CODES)
    assert c.vocab_size == c.llm_vocab_size + 10 + shapes.NUM_CODES + 1 and c.mask_token_id == c.vocab_size - 1
    assert len(policy.tokenizer) == c.image_offset  # text, then [PAD] and the specials, then the codes
    records = shapes.make_shape_records(500, seed=7) + shapes.eval_records(16)
    ids, _ = policy.tokenize_gen_prompts([r["prompt"] for r in records])
    for row, record in zip(ids.tolist(), records):  # [pad.., <|t2i|>, bos, text, eos]: no prompt is cut short
        row = row[row.index(c.t2i_id):]
        assert row[1] == row[-1] == c.bos_token_id and policy.tokenizer.decode(row[2:-1]) == record["prompt"]
    answers = [r["answer"] for r in records[:50]]
    assert policy.decode_answers(policy.tokenize_answers(answers)[0]) == answers  # the world's text round-trips
    codes = torch.randint(0, shapes.NUM_CODES, (8, shapes.NUM_CELLS), generator=torch.Generator().manual_seed(1))
    pixels = policy.decode_images(codes)
    assert torch.equal(pixels, shapes.render_tensor(codes)) and torch.equal(policy.encode_images(pixels), codes)
    assert torch.equal(policy.images_for_understanding(codes, pixels), codes)  # Show-o reads the codes themselves
    again = build_shapes_showo(seed=0, hidden=32, layers=1).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in policy.state_dict().items())  # a seed gives the same weights


def test_showo_save_load_round_trip_is_exact(tmp_path):
    policy = build_shapes_showo(seed=3, hidden=32, layers=1).eval()
    policy.save(tmp_path / "p")
    back = load_shapes_policy("shapes-showo", str(tmp_path / "p")).eval()
    assert isinstance(back.codec, ShapesCodec) and back.vq is None and back.config == policy.config
    a, b = policy.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    records = shapes.eval_records(1)
    for tokenize in ("tokenize_gen_prompts", "tokenize_und_prompts"):
        key = "prompt" if tokenize == "tokenize_gen_prompts" else "question"
        texts = [r[key] for r in records]
        assert torch.equal(getattr(policy, tokenize)(texts)[0], getattr(back, tokenize)(texts)[0])
    prompt_ids, _ = policy.tokenize_gen_prompts([r["prompt"] for r in records])
    codes = torch.randint(0, shapes.NUM_CODES, (len(records), shapes.NUM_CELLS))
    codes[:, ::2] = policy.mask_code  # a half-decoded image
    assert torch.equal(policy.masked_logits(prompt_ids, codes, 3.0), back.masked_logits(prompt_ids, codes, 3.0))


def test_non_shapes_showo_folders_are_refused(tmp_path):
    from models import load_policy

    load_policy("showo-tiny").save(tmp_path / "showo-tiny")  # Show-o, but MAGVIT-v2's 64 codes
    build_shapes_janus(seed=0, hidden=32, layers=1).save(tmp_path / "shapes-janus")  # the world, but Janus
    (tmp_path / "empty").mkdir()
    for name in ("showo-tiny", "shapes-janus", "empty"):
        with pytest.raises(ValueError, match="not a shapes-world Show-o.*pretrain.py --family showo"):
            load_shapes_policy("shapes-showo", str(tmp_path / name))


def test_showo_pretraining_lowers_both_losses_on_masked_tokens():
    rng = random.Random(0)
    masks = pretrain.masked_positions(rng, 256, shapes.NUM_CELLS)
    counts = masks.sum(1)
    assert counts.min() >= 1 and counts.max() == shapes.NUM_CELLS  # never nothing to score; sometimes everything
    assert counts.float().mean() > shapes.NUM_CELLS / 2  # the cosine schedule leans to heavy masking (2/pi = 64%)
    cfg = pretrain.PretrainConfig(family="showo", steps=40, batch=8, warmup=5, hidden=32, layers=1)
    _, history = pretrain.pretrain(cfg, log_every=0)
    first, last = history[:5], history[-5:]
    for key in ("gen_nll", "und_nll"):
        assert sum(h[key] for h in last) < 0.5 * sum(h[key] for h in first), key


def test_train_py_runs_shapes_showo_from_its_own_cached_base(tiny_showo_base, tiny_base, tmp_path):
    import json

    from models import load_policy

    assert tiny_showo_base.name.startswith("showo-") and tiny_base.name.startswith("janus-")  # cached apart
    assert json.loads((tiny_showo_base / "pretrain_config.json").read_text())["family"] == "showo"
    out = tmp_path / "run"
    train.main(["--model", "shapes-showo", "--model-path", str(tiny_showo_base), "--steps", "2", "--num-prompts", "24",
                "--prompts-per-step", "4", "--group-size", "4", "--max-answer-tokens", "8", "--threads", "1",
                "--timesteps", "4", "--eval-every", "0", "--answer-temperature", "1", "--out", str(out)])
    # sampled answers: this weak base's greedy answers often score a whole group alike, whichever prompts are drawn
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(0 <= r["reward_mean"] <= 1 for r in rows)
    assert min(r["zero_var_frac"] for r in rows) < 1  # some group's images differ: GRPO has a gradient
    back = load_policy("shapes-showo", str(out / "ckpt-000002"))
    assert isinstance(back.codec, ShapesCodec) and back.family == "showo" and back.codebook_size == shapes.NUM_CODES
    base = load_policy("shapes-showo", str(tiny_showo_base)).state_dict()
    assert any(not torch.equal(v, base[k]) for k, v in back.state_dict().items())  # GRPO moved the weights


def test_held_out_evaluation_decodes_with_the_runs_timesteps(tiny_showo_base, monkeypatch):
    import evaluate
    import generate

    seen = []
    real = generate.sample_images_masked

    def spy(*args, **kwargs):
        seen.append(kwargs["timesteps"])
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "sample_images_masked", spy)
    cfg = train.parse_config(["--model", "shapes-showo", "--timesteps", "3", "--eval-samples", "1",
                              "--max-answer-tokens", "4"])
    policy = load_shapes_policy("shapes-showo", str(tiny_showo_base))
    metrics = evaluate.held_out_eval(cfg, policy, shapes.eval_records(1))
    assert seen and set(seen) == {3}  # --timesteps reaches the evaluation's sampler, not the family default
    assert 0 <= metrics["eval/geneval"] <= 1
