"""The benchmark suite's deterministic counters, its cost formulas, the recipe helper and the GPU script's
code paths (on CPU). No timing is asserted anywhere: timings are machine noise, counters are not."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import cpu, recipe
from shapes import bench as shapes_table
from bench import roofline as R
import train
from conftest import ROOT

# Parameter counts of the real architectures, counted on the meta device (bench/builders.count_parameters).
JANUS_1B = {"total": 2_076_636_811, "frozen": 71_883_403, "trainable": 2_004_753_408}  # frozen = VQ-16
JANUS_7B = {"total": 7_407_773_323, "frozen": 71_883_403, "trainable": 7_335_889_920}
SHOWO = {"total": 1_543_563_774, "frozen": 95_387_004, "trainable": 1_448_176_770}  # frozen = MAGVIT-v2
SMALL = {"per_tag": 16, "samples": 4}  # a result row's evaluation size, as the first protocol's rows have


# ------------------------------------------------------------------------------ forward calls
def test_ar_rollout_is_one_forward_per_token_for_the_whole_batch(janus_tiny):
    """N calls for B images: 1 prefill over the prompt + N - 1 single-token steps, both CFG rows in each."""
    r = cpu.ar_forward_calls(janus_tiny, batch=3)
    n = janus_tiny.num_image_tokens
    assert r["measured"] == n and r["lm_calls"] == n
    assert r["rows_per_call"] == [6]  # 3 cond + 3 uncond rows in every call: no second pass for CFG
    assert r["step_tokens"] == [1] and r["prefill_tokens"] > 1
    assert r["ok"]


def test_masked_rollout_is_one_forward_per_timestep(showo_tiny):
    """T steps (not 2T: CFG rides in the same call), plus one prefill of the text block that every step reuses."""
    r = cpu.masked_forward_calls(showo_tiny, batch=2, timesteps=5)
    assert r["measured"] == 5 and r["trunk_calls"] == 5 + r["prefix_calls"]
    assert r["rows_per_call"] == [4]
    if r["prefix_calls"]:  # each step then runs only [<|soi|>, T image tokens, <|eoi|>]
        assert r["step_tokens"] == [showo_tiny.num_image_tokens + 2]
    assert r["ok"]


# ------------------------------------------------------------------------------ KV cache
def test_static_kv_cache_is_allocated_once_with_the_formula_bytes(janus_tiny):
    r = cpu.static_cache_allocation(janus_tiny, batch=2)
    ids, _ = cpu.janus_prompts(janus_tiny, 2)
    max_len = ids.shape[1] + janus_tiny.num_image_tokens
    text = janus_tiny.model.config.text_config
    # by hand: 2 (K, V) * layers * rows * kv_heads * max_len * head_dim * 4 bytes (fp32)
    want = 2 * text.num_hidden_layers * 4 * text.num_key_value_heads * max_len * text.head_dim * 4
    assert r["expected"] == want == r["measured"]
    assert r["caches_made"] == 1 and r["same_storage_every_step"]
    assert r["tensors"] == 2 * text.num_hidden_layers
    assert r["ok"]


def test_growing_cache_moves_at_every_step(janus_tiny):
    """The contrast that makes the static cache worth it: torch.cat growth copies the cache every call."""
    r = cpu.dynamic_cache_allocation(janus_tiny, batch=2)
    assert r["measured"] == janus_tiny.num_image_tokens - 1 and r["ok"]
    assert r["bytes_allocated_over_final"] > 10


# ------------------------------------------------------------------------------ FLOPs
def test_janus_flops_match_the_formulas(janus_tiny):
    """FlopCounterMode vs bench/roofline.py within 1 %: teacher-forced pass, cached (all slots and windowed)
    and uncached rollouts."""
    rows = cpu.janus_flops(janus_tiny, batch=2)
    assert len(rows) == 5
    assert rows[2]["measured"] < 0.97 * rows[1]["measured"]  # the window reads fewer slots than the full cache
    for r in rows:
        assert abs(r["rel_err"]) <= cpu.FLOP_TOLERANCE, r
        assert r["ok"], r
    assert rows[-1]["measured"] > 10  # the cache saves over an order of magnitude of FLOPs even at 64 tokens


def test_showo_flops_match_the_formulas(showo_tiny):
    """One full step, and whole rollouts with and without the text-prefix reuse, within 1 %."""
    rows = cpu.showo_flops(showo_tiny, batch=2)
    assert len(rows) == 3
    for r in rows:
        assert abs(r["rel_err"]) <= cpu.FLOP_TOLERANCE and r["ok"], r
    assert rows[1]["measured"] < rows[2]["measured"]  # the reuse saves the text block's work at every step


def test_roofline_reproduces_the_reference_floors():
    """Our formulas give the rollout floors of an independent hand calculation on an H100 (790 TFLOP/s bf16,
    3.0 TB/s; P = 32, 576 tokens, CFG; per step max(FLOPs / peak, bytes / bandwidth), summed over the steps)."""
    lm1, lm7 = R.LM(24, 2048, 16, 16, 128, 5632, 3), R.LM(30, 4096, 32, 32, 128, 11008, 3)
    g1, g7 = R.JanusGen(lm1, 16384, 8), R.JanusGen(lm7, 16384, 8)
    peaks = R.REFERENCE_H100
    for g, batch, ms in [(g1, 1, 515), (g1, 8, 85), (g1, 16, 55), (g1, 64, 32), (g1, 256, 26), (g7, 1, 2435),
                         (g7, 16, 210), (g7, 64, 98)]:
        assert R.janus_rollout_floor(g, batch, 32, 576, peaks)["ms_per_image"] == pytest.approx(ms, rel=0.02)
    assert R.janus_rollout_floor(g1, 64, 32, 576, peaks)["kv_cache_bytes"] / R.GiB == pytest.approx(14.2, rel=0.01)
    # Show-o 512, T = 50, CFG, as released (full lm_head): 333 TFLOP per image
    show = R.LM(24, 2048, 32, 32, 64, 8192, 2)
    assert 50 * R.showo_step_flops(show, 8192, 1024, 1155, 2, vocab=58498) / 1e12 == pytest.approx(333, rel=0.01)
    # a static cache read in full by SDPA costs more than the ideal floor at large batch
    assert R.janus_rollout_floor(g1, 64, 32, 576, peaks, bucket=0)["ms_per_image"] > 1.5 * 32
    # our windowed cache (bucket 128) gives back most of that: within 1.15x of the ideal floor
    assert R.janus_rollout_floor(g1, 64, 32, 576, peaks, bucket=128)["ms_per_image"] < 1.15 * 32


# ------------------------------------------------------------------------------ parity
def test_tokens_equal_transformers_generate_and_the_no_cache_sampler(janus_tiny):
    generate_row, plain_row = cpu.token_parity(janus_tiny, batch=2)
    assert generate_row["ok"] and generate_row["equal_fraction"] == 1.0
    assert plain_row["ok"] and plain_row["equal_fraction"] == 1.0


def test_showo_prefix_reuse_draws_the_same_tokens(showo_tiny):
    r = cpu.showo_prefix_parity(showo_tiny, batch=2)
    assert r["ok"] and r["equal_fraction"] == 1.0


# ------------------------------------------------------------------------------ recipe
def test_parameter_counts_of_the_real_architectures():
    from bench.builders import count_parameters

    assert count_parameters("janus-pro-1b") == JANUS_1B
    assert count_parameters("janus-pro-7b") == JANUS_7B
    assert count_parameters("showo") == SHOWO
    assert SHOWO["trainable"] == 1_448_176_770  # the count of the original Show-o class, instantiated


def test_recipe_janus_pro_1b_on_8x80_ddp():
    """Hand-checked: 8 prompts x G 8 over 8 GPUs, train.py --precision bf16 (fp32 master weights, grads and AdamW;
    bf16 compute)."""
    plan = recipe.plan_recipe("janus-pro-1b", 8, 80, params=JANUS_1B)
    assert (plan.group_size, plan.prompts_per_rank, plan.images_per_rank) == (8, 1, 8)
    assert (plan.micro_batch, plan.grad_accum, plan.fits) == (8, 1, True)
    gib = {k: v / R.GiB for k, v in plan.memory.items()}
    assert gib["weights"] == pytest.approx(7.736, abs=1e-3)  # 4 B x 2,076,636,811
    assert gib["grads"] == pytest.approx(7.468, abs=1e-3)  # 4 B x 2,004,753,408 (VQ frozen)
    assert gib["adamw"] == pytest.approx(14.937, abs=1e-3)  # 8 B x 2,004,753,408
    assert gib["reference"] == pytest.approx(7.736, abs=1e-3)  # a copy of the fp32 policy
    assert gib["bf16 weight copies"] == pytest.approx(3.734, abs=1e-3)  # autocast's casts: 2 B x 2,004,753,408
    assert gib["rollout: kv_cache"] == pytest.approx(1.781, abs=1e-3)  # 16 rows x 608 x 192 KiB, bf16
    assert plan.peak <= plan.usable == 0.9 * 80 * R.GiB
    command = recipe.format_plan(plan).splitlines()[-1]
    assert command == ("command: torchrun --nproc_per_node 8 train.py --model janus-pro-1b --mode grpo "
                       "--prompts-per-step 8 --group-size 8 --micro-batch 8 --precision bf16")
    zero = recipe.plan_recipe("janus-pro-1b", 8, 80, precision="mixed", params=JANUS_1B)  # ZeRO's, to compare
    assert zero.memory["adamw"] / R.GiB == pytest.approx(22.405, abs=1e-3)  # 12 B: fp32 master, m, v
    assert "command:" not in recipe.format_plan(zero)  # train.py cannot run it, so no command is offered


def test_recipe_compiled_decode_keeps_the_rollout_cache_and_its_command_runs_train_py():
    plain = recipe.plan_recipe("janus-pro-1b", 8, 80, params=JANUS_1B)
    kept = recipe.plan_recipe("janus-pro-1b", 8, 80, compile_decode=True, checkpointing=True, kl=False,
                              precision="bf16-lossy", params=JANUS_1B)
    assert "rollout: kv_cache" not in kept.memory
    assert kept.memory["kept: rollout kv_cache"] == plain.memory["rollout: kv_cache"]  # bf16 in both
    train_part = sum(v for k, v in kept.memory.items() if k.startswith("train: "))
    fixed = sum(v for k, v in kept.memory.items() if not k.startswith(("train: ", "rollout: ")))
    assert kept.peak == pytest.approx(fixed + max(train_part, kept.memory["rollout: answer_kv_cache"]))
    flags = recipe.train_command(kept).split(" train.py ")[1].split()
    cfg = train.parse_config(flags)  # every flag the helper prints is one train.py takes
    assert (cfg.micro_batch, cfg.precision, cfg.grad_ckpt, cfg.kl_beta, cfg.compile_decode) == \
        (kept.micro_batch, "bf16-lossy", True, 0.0, "reduce-overhead")
    with pytest.raises(ValueError, match="Janus under DDP"):
        recipe.plan_recipe("showo", 8, 80, compile_decode=True, params=SHOWO)
    with pytest.raises(ValueError, match="Janus under DDP"):
        recipe.plan_recipe("janus-pro-7b", 8, 80, compile_decode=True, fsdp=True, params=JANUS_7B)


def test_recipe_janus_pro_7b_needs_fsdp():
    ddp = recipe.plan_recipe("janus-pro-7b", 8, 80, params=JANUS_7B)
    states = (ddp.memory["weights"] + ddp.memory["grads"] + ddp.memory["adamw"]) / R.GiB
    assert states == pytest.approx(109.59, abs=0.01)  # ~16 B per parameter: above any 80 GiB card
    assert not ddp.fits and any("--fsdp" in a for a in ddp.advice)
    fsdp = recipe.plan_recipe("janus-pro-7b", 8, 80, fsdp=True, params=JANUS_7B)
    assert fsdp.fits and fsdp.memory["adamw"] == ddp.memory["adamw"] / 8
    assert fsdp.micro_batch * fsdp.grad_accum >= fsdp.images_per_rank == 8
    assert fsdp.grad_accum > 1  # 8 images of 7B activations do not fit next to the gathered weights
    # --precision bf16 under FSDP2: the shards stay fp32, the rollout gathers them in bf16, autocast copies nothing
    assert fsdp.memory["rollout: unsharded_weights"] == 2 * JANUS_7B["total"]
    assert "bf16 weight copies" not in fsdp.memory and "bf16 weight copies" in ddp.memory
    assert "does NOT fit" in recipe.format_plan(ddp) and "fits." in recipe.format_plan(fsdp)


def test_recipe_keeps_the_global_batch_and_never_splits_a_group():
    plan = recipe.plan_recipe("showo", 4, 80, params=SHOWO)
    assert (plan.group_size, plan.prompts_per_step, plan.prompts_per_rank, plan.images_per_rank) == (3, 8, 2, 6)
    with pytest.raises(ValueError, match="never leaves its rank"):
        recipe.plan_recipe("showo", 16, 80, params=SHOWO)
    with pytest.raises(ValueError, match="unknown --model"):
        recipe.plan_recipe("llama", 8, 80, params=SHOWO)


# ------------------------------------------------------------------------------ the GPU script on CPU
def test_checkpointing_switch_recomputes_each_layer():
    """G8's checkpointing rows mean something only if the switch really recomputes the layers in backward."""
    from types import SimpleNamespace

    from bench import gpu
    from bench.builders import build_janus_policy, build_showo_policy

    suite = SimpleNamespace(device=torch.device("cpu"), prompt_len=8)
    for policy, mlp in [(build_janus_policy("tiny-1b"), lambda p: p.model.model.language_model.layers[0].mlp),
                        (build_showo_policy(tiny=True), lambda p: p.model.showo.model.layers[0].mlp)]:
        policy.train()
        for on, calls in [(False, 1), (True, 2)]:
            gpu.set_checkpointing(policy, on)
            seen = []
            # a pre-hook: the recompute stops right after the last saved tensor, before a forward hook would fire
            handle = mlp(policy).register_forward_pre_hook(lambda *a: seen.append(1))
            gpu.fwd_bwd(policy, gpu.train_batch(suite, policy, 2))
            handle.remove()
            assert len(seen) == calls, (policy.family, on)
        gpu.set_checkpointing(policy, False)


def test_gpu_script_dry_run_tiny(tmp_path):
    """`bench/gpu.py --dry-run --tiny` runs every case's code on CPU; greedy tokens agree with generate()."""
    out = tmp_path / "gpu.jsonl"
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--dry-run", "--tiny", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["case"] == "environment" and rows[0]["dry_run"]
    assert not [r for r in rows if "error" in r or "skipped" in r]
    assert {r["case"] for r in rows[1:]} == {f"G{i}" for i in range(11)}
    for r in rows:
        if r["case"] in ("G1", "G2", "G3"):
            assert r["tokens_equal_fraction"] == 1.0, r
        if r["case"] == "G10":
            assert r["windowed_tokens_equal_fraction"] == 1.0, r
        if "roofline_frac" in r:
            assert r["roofline_frac"] > 0
    shares = [r for r in rows if r["case"] == "G9"]
    assert len(shares) == 2
    for r in shares:  # the phases add up to the iteration
        assert sum(v for k, v in r.items() if k.startswith("share_")) == pytest.approx(1.0, abs=0.05)


# ------------------------------------------------------------------------------ the shapes world's table
def fake_metrics(arm: str, seed: int) -> dict:
    """evaluate_world's keys, with grpo-both clearly above the base and sft below it."""
    judge = {"base": 0.60, "grpo-both": 0.70, "sft": 0.40}.get(arm, 0.60) + 0.001 * (seed % 7)
    tags = {f"geneval/{t}": judge for t in shapes_table.shapes.TAGS}
    return {**tags, "geneval": judge, "und": 0.85, "self_qa": judge, "imbalance": 0.1 if arm == "base" else 0.05,
            "imbalance/judge_only": 0.03, "imbalance/answer_only": 0.02, "images": 6, "seconds": 0.0}


def test_shapes_bench_seed_sets_are_disjoint_and_the_sweep_refuses_report_seeds():
    assert not set(shapes_table.DEV_SEEDS) & set(shapes_table.REPORT_SEEDS)
    assert shapes_table.parse_seeds(["report"]) == list(shapes_table.REPORT_SEEDS)
    assert shapes_table.parse_seeds(["dev"]) == list(shapes_table.DEV_SEEDS)
    assert [shapes_table.seed_set(s) for s in (100, 1000, 2000, 3000, 7)] == ["dev", "report", "confirm", "fresh",
                                                                            "other"]
    named = [set(seeds) for seeds in shapes_table.SEED_SETS.values()]
    assert sum(map(len, named)) == len(set.union(*named))  # no seed is in two sets
    with pytest.raises(ValueError, match="never choose"):
        shapes_table.parse_args(["--sweep", "--seeds", "fresh"])
    with pytest.raises(ValueError, match="never choose"):
        shapes_table.parse_args(["--sweep", "--seeds", "confirm"])
    with pytest.raises(ValueError, match="never choose a setting"):
        shapes_table.parse_args(["--sweep", "--seeds", "report"])
    with pytest.raises(ValueError, match="give dev, report, confirm, fresh, .*, fresh7, or integers"):
        shapes_table.parse_args(["--seeds", "reprot"])


def test_shapes_bench_report_rows_are_labelled_and_train_on_the_split(tmp_path, monkeypatch, capsys):
    """--seeds report: every row says report, the table says so, train.py accepts every arm's command line, and
    the pool it builds from that command line holds no evaluation prompt (models stubbed: seconds, not hours)."""
    import prompts
    import shapes

    argvs = []

    def fake_train(argv):
        cfg = train.parse_config(argv)
        train.validate(cfg, 1)  # every flag the bench passes is one train.py accepts
        if not argvs:  # the pool: once, it takes a few seconds at train.py's default size
            training, _ = train.load_records(cfg)
            evaluation = shapes.eval_records(shapes.EVAL_PER_TAG)
            assert all(shapes.split_of(r) == "train" for r in training)
            assert not {prompts.prompt_key(r) for r in evaluation} & {prompts.prompt_key(r) for r in training}
            assert not {r["prompt"] for r in evaluation} & {r["prompt"] for r in training}
        argvs.append(argv)

    def fake_base(cfg):  # a folder, as train.py checks --model-path before anything loads
        (tmp_path / f"base-{cfg.seed}").mkdir(exist_ok=True)
        return tmp_path / f"base-{cfg.seed}"

    monkeypatch.setattr(shapes_table.pretrain, "cached_base", fake_base)
    monkeypatch.setattr(shapes_table.train, "main", fake_train)
    monkeypatch.setattr(shapes_table, "load_shapes_policy", lambda model, folder: folder)
    monkeypatch.setattr(shapes_table, "evaluate_world", lambda folder, records, **kw: fake_metrics(
        "base" if "base-" in folder else Path(folder).parent.name.split("-s1")[0], 0))
    out = tmp_path / "rows.jsonl"
    shapes_table.main(["--seeds", "report", "--arms", "base", "sft", "grpo-both", "--steps", "2", "--threads", "1",
                       "--work", str(tmp_path / "work"), "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 * len(shapes_table.REPORT_SEEDS) and len(argvs) == 2 * len(shapes_table.REPORT_SEEDS)
    assert {r["seed_set"] for r in rows} == {"report"} and {r["seed"] for r in rows} == set(shapes_table.REPORT_SEEDS)
    assert all(r["lr"] == shapes_table.arm_settings("shapes-janus", r["arm"])["lr"] for r in rows if r["arm"] != "base")
    printed = capsys.readouterr().out
    assert "REPORT seeds (1000 1001 1002 1003 1004)" in printed
    assert "holds: generation improves" in printed and out.with_suffix(".png").stat().st_size > 0
    lr = shapes_table.arm_settings("shapes-janus", "grpo-both")["lr"]
    line = printed.split(f"| grpo-both | `grpo --grpo-on both` | {lr:g} | 5 |")[1].split("\n")[0]  # README's table
    # paired by seed: +0.1 on each, SE floored at one judgement of the overall score, 1/(128 x 8 x 6), over sqrt(5)
    assert "| +0.100 ± 0.000 (+1373.8 SE) |" in line


def test_shapes_bench_claims_give_the_expected_verdicts():
    rows = []
    for seed in shapes_table.REPORT_SEEDS:
        wobble = 0.01 * (seed % 3)
        rows += [{**SMALL, "model": "shapes-janus", "arm": "base", "seed": seed, "geneval": 0.60 + wobble, "und": 0.80,
                  "imbalance": 0.10},
                 {**SMALL, "model": "shapes-janus", "arm": "grpo-both", "seed": seed, "geneval": 0.70 + wobble,  # +0.1 always
                  "und": 0.80 + (0.05 if seed % 2 else -0.04), "imbalance": 0.12},  # und: noise, imbalance rises
                 {**SMALL, "model": "shapes-janus", "arm": "sft", "seed": seed, "geneval": 0.50 + 2 * wobble}]
    verdicts = {name.split(" (")[0] + (" e2e" if "end to end" in name else ""): verdict
                for name, verdict, _ in shapes_table.claims(rows)}
    assert verdicts == {"generation improves": "holds", "understanding improves": "does not hold",
                        "understanding is no lower": "holds",  # +0.05 / -0.04 alternating: within one SE
                        "the imbalance falls": "does not hold", "GRPO beats SFT": "holds",
                        "GRPO beats SFT e2e": "not measured",
                        "beyond the paper: generation improves with agreement answers": "not measured",
                        "beyond the paper: understanding improves with agreement answers": "not measured",
                        "beyond the paper: understanding is no lower with agreement answers": "not measured",
                        "beyond the paper: agreement answers beat UniRL's": "not measured"}
    numbers = shapes_table.claims(rows)[0][2]
    assert "+0.100" in numbers and "n=5 seeds" in numbers


def test_shapes_bench_sweep_picks_the_best_judge_among_rates_that_keep_understanding():
    # (judge, understanding) per arm and rate; the base understands 0.80 on every dev seed
    dev = {("grpo-both", 3e-5): (0.70, 0.80), ("grpo-both", 1e-4): (0.75, 0.79), ("grpo-both", 3e-4): (0.80, 0.70),
           ("sft", 1e-4): (0.50, 0.75), ("sft", 3e-4): (0.60, 0.60)}
    rows = [{**SMALL, "arm": arm, "lr": lr, "seed": seed, "geneval": judge + 0.01 * seed, "und": und + 0.001 * (seed % 2)}
            for (arm, lr), (judge, und) in dev.items() for seed in shapes_table.DEV_SEEDS]
    rows += [{**SMALL, "arm": "base", "seed": seed, "geneval": 0.9, "und": 0.80} for seed in shapes_table.DEV_SEEDS]
    # grpo-both 3e-4 has the best judge but loses understanding; 1e-4 loses 0.01, more than one SE (the floor, 1/96 over sqrt(3));
    # sft keeps understanding at no rate, so it takes the rate that loses the least
    assert shapes_table.best_settings(rows) == {"grpo-both": {"lr": 3e-5}, "sft": {"lr": 1e-4}}
    for test_set in shapes_table.TEST_SETS:  # no seed of a test set chooses
        seeds = shapes_table.SEED_SETS[test_set]
        rows += [{**SMALL, "arm": arm, "lr": 1e-5, "seed": seed, "geneval": 0.99 if arm != "base" else 0.1,
                  "und": 0.9} for seed in seeds[:3] for arm in ("base", "grpo-both")]
    assert shapes_table.best_settings(rows)["grpo-both"] == {"lr": 3e-5}
    rows = [r for r in rows if shapes_table.seed_set(r["seed"]) == "dev"]
    # a rate run on one dev seed only: the rates are compared on that seed, and 1e-5 wins there
    rows += [{**SMALL, "arm": "grpo-both", "lr": 1e-5, "seed": 102, "geneval": 1.8, "und": 0.80}]
    assert shapes_table.best_settings(rows) == {"sft": {"lr": 1e-4}}  # one common seed: no SE, no choice
    rows += [{**SMALL, "arm": "grpo-both", "lr": 1e-5, "seed": 101, "geneval": 1.8, "und": 0.80}]
    assert shapes_table.best_settings(rows)["grpo-both"] == {"lr": 1e-5}
    printed = shapes_table.format_sweep(rows)
    assert 'ARM_SETTINGS["shapes-janus"].update({' in printed and '"grpo-both": {"lr": 1e-05},' in printed
    assert '"sft": {"lr": 0.0001},  # none kept understanding; the lowest rate tried' in printed
    assert re.search(r"grpo-both lr 0.0003: judge 1.815, understanding -0.100 ± 0.007 vs base \(LOST, -1\d\.\d SE\) "
                     r"on seeds \[101, 102\]", printed)  # the ratio: rounding can hide a loss just past 1 SE
    # an arm whose rates ran on different seeds is not chosen, and the sweep says so
    rows += [{**SMALL, "arm": "grpo-gen", "lr": 1e-4, "seed": 100, "geneval": 0.7, "und": 0.8},
             {**SMALL, "arm": "grpo-gen", "lr": 3e-5, "seed": 101, "geneval": 0.8, "und": 0.8}]
    assert "grpo-gen" not in shapes_table.best_settings(rows)
    assert "not chosen (shapes-janus): grpo-gen" in shapes_table.format_sweep(rows)
    # a KL weight swept with the rate is one more setting: rows that record {"lr", "kl_beta"} compete with the
    # rows of the rate alone, and the choice carries both names
    rows += [{**SMALL, "arm": "grpo-both", "lr": 3e-4, "kl_beta": 0.2, "settings": {"lr": 3e-4, "kl_beta": 0.2}, "seed": seed,
              "geneval": 1.9, "und": 0.80} for seed in (101, 102)]
    assert shapes_table.best_settings(rows)["grpo-both"] == {"kl_beta": 0.2, "lr": 3e-4}
    assert "grpo-both kl_beta 0.2 lr 0.0003: judge 1.900" in shapes_table.format_sweep(rows)
    # two rows of one arm, setting and seed, or two bases of one seed: an error, not a silent pick of the last
    for twin in ({**rows[-1], "geneval": 0.1}, {**SMALL, "arm": "base", "seed": 100, "geneval": 0.5, "und": 0.9}):
        with pytest.raises(ValueError, match="a sweep file holds one run per arm, setting and seed"):
            shapes_table.best_settings(rows + [twin])


def test_shapes_bench_crosses_rates_with_kl_weights_and_keeps_an_arms_own_rate():
    args = shapes_table.parse_args(["--sweep", "--lrs", "3e-5", "1e-4", "--kl-betas", "0", "0.2"])
    assert shapes_table.settings_grid(args, "grpo-both", args.lrs) == [
        {"lr": 3e-5, "kl_beta": 0.0}, {"lr": 3e-5, "kl_beta": 0.2}, {"lr": 1e-4, "kl_beta": 0.0},
        {"lr": 1e-4, "kl_beta": 0.2}]
    assert shapes_table.settings_grid(args, "sft-e2e", args.lrs) == [{"lr": 3e-5}, {"lr": 1e-4}]  # SFT has no KL
    args = shapes_table.parse_args(["--seeds", "fresh2", "--kl-betas", "0.2"])  # the arm's own rate stays
    own = shapes_table.arm_settings("shapes-janus", "grpo-und")["lr"]
    assert shapes_table.settings_grid(args, "grpo-und", None) == [{"lr": own, "kl_beta": 0.2}]
    assert args.out.name == "shapes-janus-fresh2-kl0.2.jsonl"
    # train.py runs the KL weight the row will record
    argv = shapes_table.train_argv("grpo-both", 4000, Path("base"), Path("out"), args, [], {"lr": 1e-5, "kl_beta": 0.2})
    assert shapes_table.train.parse_config(argv).kl_beta == 0.2


def test_shapes_bench_crosses_answer_weights_only_where_both_tasks_train():
    args = shapes_table.parse_args(["--sweep", "--lrs", "1e-5", "--und-weights", "0.25", "0.5"])
    assert shapes_table.settings_grid(args, "grpo-both", args.lrs) == [{"lr": 1e-5, "und_weight": 0.25},
                                                                        {"lr": 1e-5, "und_weight": 0.5}]
    for arm in ("sft", "sft-e2e", "grpo-gen", "grpo-und"):  # one loss term: a weight there would change nothing
        assert shapes_table.settings_grid(args, arm, args.lrs) == [{"lr": 1e-5}]
    args = shapes_table.parse_args(["--seeds", "fresh3", "--und-weights", "0.5"])
    assert args.out.name == "shapes-janus-fresh3-uw0.5.jsonl"
    with pytest.raises(ValueError, match="must never choose"):  # a test set
        shapes_table.parse_args(["--sweep", "--seeds", "fresh3"])
    argv = shapes_table.train_argv("grpo-both", 5000, Path("base"), Path("out"), args, [],
                                   {"lr": 1e-5, "und_weight": 0.5})
    assert shapes_table.train.parse_config(argv).und_weight == 0.5


def test_the_world_presets_train_at_the_rate_the_sweep_chose():
    """`python train.py` runs GRPO on both tasks with UniRL's loss at the rate the development seeds chose."""
    for model in shapes_table.FAMILIES:
        assert shapes_table.shapes.TRAIN_DEFAULTS[model]["lr"] == shapes_table.arm_settings(model, "grpo-both")["lr"]
        assert shapes_table.arm_settings(model, "grpo-both").get("und_weight", 1.0) == 1.0  # the paper's sum
        cfg = shapes_table.train.parse_config(["--model", model])
        assert (cfg.mode, cfg.grpo_on, cfg.couple, cfg.answer_reward) == ("grpo", "both", False, "prompt")


def test_label_noise_prices_the_prompt_answer_above_the_image_answer(monkeypatch):
    """Counting images that show one object more than the prompt asks: the judge fails them all; an answer that
    repeats the prompt's count earns 1, one that reads the image's count earns 1/2, and label_noise says so."""
    import random
    from types import SimpleNamespace

    import shapes

    records = [r for r in shapes.make_shape_records(60, seed=3) if r["tag"] == "counting"][:2]
    rng = random.Random(0)
    scenes, answers = [], []
    for record in records:
        obj, count = record["include"][0]["class"], record["include"][0]["count"]
        more = {**{k: v for k, v in record.items() if k != "answer"}, "include": [{"class": obj, "count": count + 1}],
                "exclude": [{"class": obj, "count": count + 2}]}  # exactly one more (GenEval's counting rule)
        for k in range(4):
            scene = shapes.sample_scene(more, rng)
            scenes.append(scene)
            answers.append(shapes.scene_answer(record if k % 2 == 0 else more, scene))  # the prompt's, the image's
    pixels = shapes.render_tensor(torch.stack(scenes))
    monkeypatch.setattr(shapes_table, "rollout", lambda policy, recs, g, **kw: SimpleNamespace(
        records=[r for r in recs for _ in range(g)], image_ids=torch.stack(scenes), pixels=pixels))
    monkeypatch.setattr(shapes_table, "answer_questions", lambda *a, **kw: (None, None, None, None, answers))
    policy = SimpleNamespace(images_for_understanding=lambda ids, px: px)
    result = shapes_table.label_noise(policy, records, 4, cfg_scale=3.0, seed=0)
    assert result["judge_fails"] == 1.0
    assert result["fails_answered_with_the_prompt"] == 0.5 and result["fails_answered_with_the_image"] == 0.5
    assert result["reward_prompt_answer"] == 1.0 and result["reward_image_answer"] == 0.5
    # every vote here repeats the trained answer, so the gate keeps exactly the failed images answered with the prompt
    assert result["gate_keeps_failed"] == 0.5 and result["gate_keeps_passed"] is None  # no passed image: JSON null


def test_label_noise_reads_the_relation_the_image_shows(monkeypatch):
    """Position images drawn with the opposite relation: the prompt's relation earns 1, the image's own relation
    less (the objects are right, the relation is not), and label_noise counts the latter as reading the image."""
    import random
    from types import SimpleNamespace

    import shapes

    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    records = [r for r in shapes.training_records(200, seed=3) if r["tag"] == "position"][:2]
    rng = random.Random(0)
    scenes, answers = [], []
    for record in records:
        flipped = {k: v for k, v in record.items() if k != "answer"}
        flipped["include"] = [{**e, "position": [opposite[e["position"][0]], e["position"][1]]} if "position" in e
                              else e for e in record["include"]]
        for k in range(4):
            scene = shapes.sample_scene(flipped, rng)
            scenes.append(scene)
            answers.append(shapes.scene_answer(record if k % 2 == 0 else flipped, scene))
    pixels = shapes.render_tensor(torch.stack(scenes))
    monkeypatch.setattr(shapes_table, "rollout", lambda policy, recs, g, **kw: SimpleNamespace(
        records=[r for r in recs for _ in range(g)], image_ids=torch.stack(scenes), pixels=pixels))
    monkeypatch.setattr(shapes_table, "answer_questions", lambda *a, **kw: (None, None, None, None, answers))
    result = shapes_table.label_noise(SimpleNamespace(images_for_understanding=lambda ids, px: px), records, 4,
                                      cfg_scale=3.0, seed=0)
    assert result["judge_fails"] == 1.0 and result["reward_prompt_answer"] == 1.0
    assert result["fails_answered_with_the_prompt"] == 0.5 and result["fails_answered_with_the_image"] == 0.5
    assert result["reward_image_answer"] < 1.0


def test_not_lower_fails_when_understanding_drops_beyond_one_standard_error():
    rows = []
    for seed in shapes_table.REPORT_SEEDS:
        rows += [{**SMALL, "model": "shapes-janus", "arm": "base", "seed": seed, "geneval": 0.6, "und": 0.80, "imbalance": 0.1},
                 {**SMALL, "model": "shapes-janus", "arm": "grpo-both", "seed": seed, "geneval": 0.7,
                  "und": 0.70 + 0.01 * (seed % 2), "imbalance": 0.1}]
    verdicts = {name: verdict for name, verdict, _ in shapes_table.claims(rows)}
    assert verdicts["understanding is no lower (true scenes, GRPO both vs base, within 1 SE)"] == "does not hold"


def test_claims_need_three_seeds():
    rows = [{**SMALL, "model": "shapes-janus", "arm": arm, "seed": seed, "geneval": value, "und": 0.8, "imbalance": 0.1}
            for seed in (1000, 1001) for arm, value in (("base", 0.6), ("grpo-both", 0.7))]
    verdicts = {name: verdict for name, verdict, _ in shapes_table.claims(rows)}
    assert verdicts["generation improves (judge, GRPO both vs base)"] == "not measured"


def test_shapes_bench_writes_where_the_readme_says():
    """The default results file of each family and seed set is the one README and bench/results name."""
    results = shapes_table.ROOT / "bench" / "results"
    assert shapes_table.parse_args(["--seeds", "report"]).out == results / "shapes-janus-report.jsonl"
    assert shapes_table.parse_args(["--model", "shapes-showo", "--seeds", "report"]).out == \
        results / "shapes-showo-report.jsonl"
    assert shapes_table.parse_args(["--sweep"]).out == results / "shapes-janus-sweep.jsonl"
    assert "bench/results/shapes-janus-report.jsonl" in (shapes_table.ROOT / "README.md").read_text()


def test_shapes_bench_runs_every_arm_at_given_rates_and_refuses_an_lr_it_would_mislabel(monkeypatch, tmp_path):
    grids = []
    monkeypatch.setattr(shapes_table, "run_grid", lambda args, extra, grid, out: grids.append(grid) or [])
    monkeypatch.setattr(shapes_table, "plot_arms", lambda rows, arms, path: path)
    common = ["--arms", "base", "grpo-both", "--out", str(tmp_path / "rows.jsonl")]
    shapes_table.main(["--seeds", "confirm", "--lrs", "3e-5"] + common)
    shapes_table.main(["--seeds", "confirm"] + common)
    assert grids == [{"base": [{}], "grpo-both": [{"lr": 3e-5}]},
                     {"base": [{}], "grpo-both": [shapes_table.arm_settings("shapes-janus", "grpo-both")]}]
    for extra in (["--", "--lr", "3e-5"], ["--", "--lr=3e-5"]):  # train.py would run 3e-5, the row say 1e-4
        with pytest.raises(ValueError, match="--lrs"):
            shapes_table.main(["--seeds", "confirm"] + common + extra)


def test_shapes_bench_reuse_evaluates_a_finished_run_only_if_its_settings_match(tmp_path, monkeypatch):
    """--reuse: a run whose checkpoint holds the settings train.py would get now is evaluated, not trained; a run
    trained with other settings is an error naming the difference, before anything is evaluated."""
    import dataclasses

    trained = []

    def fake_train(argv, lr_drift=0.0):
        cfg = train.parse_config(argv)
        train.validate(cfg, 1)  # the checkpoint holds the config as the run resolved it
        trained.append(cfg.seed)
        ckpt = Path(cfg.out) / f"ckpt-{cfg.steps:06d}"
        ckpt.mkdir(parents=True)
        config = dict(dataclasses.asdict(cfg), lr=cfg.lr + lr_drift, threads=7)  # threads may differ
        del config["und_weight"]  # a run from before that flag: it ran at the flag's default, and matches
        (ckpt / "trainer_state.json").write_text(json.dumps({"step": cfg.steps, "config": config}))

    monkeypatch.setattr(shapes_table.pretrain, "cached_base", lambda cfg: tmp_path)
    monkeypatch.setattr(shapes_table.train, "main", fake_train)
    monkeypatch.setattr(shapes_table, "load_shapes_policy", lambda model, folder: folder)
    monkeypatch.setattr(shapes_table, "evaluate_world", lambda folder, records, **kw: fake_metrics("x", 0))
    monkeypatch.setattr(shapes_table, "plot_arms", lambda rows, arms, path: path)
    out = tmp_path / "rows.jsonl"
    argv = ["--seeds", "2000", "--arms", "grpo-both", "--steps", "2", "--work", str(tmp_path / "work"),
            "--out", str(out)]
    shapes_table.main(argv)
    shapes_table.main(argv + ["--reuse"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert trained == [2000] and "reused" not in rows[0] and rows[0]["cpu_min"] is not None
    assert rows[1]["reused"].endswith("ckpt-000002") and rows[1]["cpu_min"] is None
    assert "| grpo-both (n=2) |" in shapes_table.format_rows(rows, ["grpo-both"])  # CPU minutes of one run
    monkeypatch.setattr(shapes_table.train, "main", lambda argv: fake_train(argv, lr_drift=1e-5))
    shapes_table.main(["--seeds", "2001"] + argv[2:])
    lr = shapes_table.arm_settings("shapes-janus", "grpo-both")["lr"]
    with pytest.raises(ValueError, match=rf"other settings \(lr: ran {lr + 1e-5!r}, now {lr!r}\)"):
        shapes_table.main(["--seeds", "2001"] + argv[2:] + ["--reuse"])
    assert len(out.read_text().splitlines()) == 3


def test_shapes_bench_keeps_runs_off_the_protocol_out_of_its_files(monkeypatch, tmp_path):
    """Rows at other rates or another evaluation size go to a file named for them, rows say their evaluation
    size, a results file with two rows of one arm and seed is refused instead of pairing twice, and a rate set
    after -- in any spelling train.py accepts is refused before training."""
    results = shapes_table.ROOT / "bench" / "results"
    assert shapes_table.parse_args(["--seeds", "confirm", "--lrs", "3e-5"]).out == \
        results / "shapes-janus-confirm-lr3e-05.jsonl"
    assert shapes_table.parse_args(["--seeds", "report", "--per-tag", "64", "--samples", "8"]).out == \
        results / "shapes-janus-report-eval64x8.jsonl"
    rows = [{**SMALL, "arm": arm, "seed": seed, "geneval": 0.5} for arm in ("base", "grpo-both") for seed in (1, 2, 3)]
    assert shapes_table.paired(rows, "grpo-both", "base", "geneval")[2] == 3
    with pytest.raises(ValueError, match=r"grpo-both has more than one row for seed\(s\) \[2\]"):
        shapes_table.paired(rows + [{**SMALL, "arm": "grpo-both", "seed": 2, "geneval": 0.9}], "grpo-both", "base", "geneval")
    monkeypatch.setattr(shapes_table.pretrain, "cached_base", lambda cfg: tmp_path)
    monkeypatch.setattr(shapes_table.train, "main", lambda argv: pytest.fail("trained despite the override"))
    # an abbreviation argparse expands to --lr; a KL or answer weight the rows would not record
    for extra in (["--", "--l", "3e-5"], ["--", "--lr=3e-5"], ["--", "--kl-beta", "0.05"], ["--", "--und-weight=0.3"]):
        with pytest.raises(ValueError, match="give them with --lrs, --kl-betas or --und-weights"):
            shapes_table.main(["--seeds", "2000", "--arms", "grpo-both", "--work", str(tmp_path),
                               "--out", str(tmp_path / "rows.jsonl")] + extra)
    with pytest.raises(ValueError, match="none of the arms \\(base, grpo-gen\\) trains both"):
        shapes_table.main(["--seeds", "2000", "--arms", "base", "grpo-gen", "--und-weights", "0.3", "--work",
                           str(tmp_path), "--out", str(tmp_path / "rows.jsonl")])
    # rows of two evaluation sizes never pair, and a run refuses, before any base, a file of another size
    small = [{**SMALL, "arm": "base", "seed": seed, "geneval": 0.5, "per_tag": 16, "samples": 4} for seed in (1, 2, 3)]
    large = [{**SMALL, "arm": "grpo-both", "seed": seed, "geneval": 0.6, "per_tag": 128, "samples": 8} for seed in (1, 2, 3)]
    with pytest.raises(ValueError, match=r"different sizes \[\(16, 4\), \(128, 8\)\]"):
        shapes_table.paired(small + large, "grpo-both", "base", "geneval")
    (tmp_path / "small.jsonl").write_text("".join(json.dumps(r) + "\n" for r in small))
    monkeypatch.setattr(shapes_table.pretrain, "cached_base", lambda cfg: pytest.fail("pretrained despite the file"))
    with pytest.raises(ValueError, match="--per-tag 128 --samples 8: give another --out"):
        shapes_table.main(["--seeds", "2000", "--arms", "base", "--work", str(tmp_path),
                           "--out", str(tmp_path / "small.jsonl")])


def test_a_row_without_its_evaluation_size_is_read_only_when_its_image_count_confirms_it():
    assert shapes_table.eval_size({"arm": "base", "seed": 1, "images": 384}) == (16, 4)
    assert shapes_table.eval_size({"arm": "base", "seed": 1, "images": 6144, "per_tag": 128, "samples": 8}) == (128, 8)
    with pytest.raises(ValueError, match="counts 6144 images, not the first protocol's 384"):
        shapes_table.eval_size({"arm": "base", "seed": 1, "images": 6144})
    for name, size in (("shapes-janus-precise.jsonl", (128, 8)), ("shapes-showo-precise.jsonl", (64, 8)),
                       ("shapes-janus-fresh.jsonl", (128, 8)), ("shapes-janus-sweep.jsonl", (128, 8))):  # their plans'
        rows = shapes_table.read_rows(str(shapes_table.ROOT / "bench" / "results" / name))
        assert {shapes_table.eval_size(r) for r in rows} == {size}, name
        assert all(r["images"] == size[0] * size[1] * len(shapes_table.shapes.TAGS) for r in rows), name


def test_a_sweep_chooses_over_its_whole_file_and_records_every_setting_it_varies(monkeypatch, tmp_path, capsys):
    """--sweep prints the choice over every row of its file (a run that adds one setting does not choose alone),
    --sweep-table prints it again, and flags after -- are refused, since the rows would not record them."""
    def fake_eval(policy, records, **kw):
        return fake_metrics(str(policy), 0)
    monkeypatch.setattr(shapes_table.pretrain, "cached_base", lambda cfg: tmp_path)
    monkeypatch.setattr(shapes_table.train, "main", lambda argv: None)
    monkeypatch.setattr(shapes_table, "load_shapes_policy", lambda model, folder: folder)
    monkeypatch.setattr(shapes_table, "evaluate_world", fake_eval)
    out = tmp_path / "sweep.jsonl"
    earlier = [{**SMALL, "model": "shapes-janus", "arm": arm, "seed": seed, "lr": 1e-5, "settings": {"lr": 1e-5},
                "per_tag": 128, "samples": 8, "images": 6144, "geneval": 0.9 if arm != "base" else 0.5, "und": 0.8}
               for seed in (100, 101) for arm in ("base", "grpo-both")]
    out.write_text("".join(json.dumps(r) + "\n" for r in earlier))
    shapes_table.main(["--sweep", "--seeds", "100", "101", "--arms", "grpo-both", "--lrs", "1e-4", "--work",
                       str(tmp_path), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "grpo-both lr 1e-05: judge 0.900" in printed and '"grpo-both": {"lr": 1e-05},' in printed
    shapes_table.main(["--sweep-table", str(out)])
    assert '"grpo-both": {"lr": 1e-05},' in capsys.readouterr().out
    with pytest.raises(ValueError, match="--sweep takes no train.py flags after --"):
        shapes_table.main(["--sweep", "--arms", "grpo-both", "--work", str(tmp_path), "--out", str(out), "--",
                           "--kl-beta", "0.2"])


def test_sft_guidance_finds_the_benchs_sft_runs_and_pairs_by_seed(tmp_path):
    """bench/shapes_sft_guidance.py reads the sft runs where shapes/bench.py writes them, refuses before any
    evaluation when one is missing, and pairs sft with its own seed's base at each guidance scale."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sft_guidance", shapes_table.ROOT / "bench" / "shapes_sft_guidance.py")
    guidance = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guidance)
    lr = shapes_table.arm_settings("shapes-janus", "sft")["lr"]
    assert guidance.sft_folder(tmp_path, 1000) == tmp_path / f"sft-s1000-lr{lr}" / "ckpt-000300"
    with pytest.raises(SystemExit, match="no finished sft run"):
        guidance.main(["--work", str(tmp_path), "--seeds", "1000", "--out", str(tmp_path / "rows.jsonl")])
    rows = [{"seed": s, "arm": a, "cfg_scale": c, "geneval": v} for s, a, c, v in
            [(1, "base", 3.0, 0.7), (1, "sft", 3.0, 0.5), (2, "base", 3.0, 0.6), (2, "sft", 3.0, 0.5),
             (1, "base", 1.0, 0.7), (1, "sft", 1.0, 0.7)]]
    assert guidance.paired_text(rows, 3.0, "geneval") == "s = 3, geneval: sft - base = -0.150 ± 0.050 (n=2)"
    assert guidance.paired_text(rows, 1.0, "geneval") == "s = 1, geneval: fewer than 2 seeds"
