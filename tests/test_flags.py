"""Every number and path flag of train.py, evaluate.py and shapes/pretrain.py is checked before anything heavy.

Each bad value must fail in validation with a one-line error naming the flag, before a model is loaded
(load_policy and pretraining are replaced by functions that fail the test) and before any folder is made.
Most cases call main() in-process; one subprocess per command checks the exit code 2 and the one-line stderr.

Run: python -m pytest -q tests/test_flags.py
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import cli
import evaluate
import models
from shapes import pretrain
import train

ROOT = Path(__file__).resolve().parents[1]

# flag -> bad values, written by hand (a test below checks that every number flag has a line here)
TRAIN_BAD = {
    "--steps": ["0"], "--seed": ["-1"], "--threads": ["-1"], "--kv-bucket": ["-1"], "--num-prompts": ["0"],
    "--prompts-per-step": ["0"], "--group-size": ["0"], "--cfg-scale": ["-1", "nan"], "--temperature": ["-0.5", "nan"],
    "--timesteps": ["0"], "--max-answer-tokens": ["0"], "--answer-temperature": ["-1", "nan"],
    "--sft-min-reward": ["1.5", "nan"], "--gumbel-tau": ["0", "inf"], "--clip-eps": ["0", "1", "nan"],
    "--kl-beta": ["-0.1", "nan"], "--inner-iters": ["0"], "--traj-steps": ["-1"], "--lr": ["0", "-0.1", "nan"],
    "--weight-decay": ["-1", "nan"], "--warmup-steps": ["-1"], "--grad-clip": ["-1", "nan"], "--micro-batch": ["0"],
    "--sample-every": ["0"], "--eval-every": ["-1"], "--eval-prompts": ["0"], "--eval-samples": ["0"],
    "--save-every": ["0"], "--keep-checkpoints": ["-1"], "--votes": ["0"], "--und-weight": ["0", "-1", "nan"],
    "--answer-keep": ["0", "1.5", "nan"],
}
EVAL_BAD = {
    "--n-samples": ["0", "10000"], "--batch-size": ["0"], "--cfg-scale": ["-1", "nan"], "--temperature": ["-1", "nan"],
    "--steps": ["0"], "--seed": ["-1"], "--max-answer-tokens": ["0"], "--threads": ["-1"], "--kv-bucket": ["-1"],
    "--per-tag": ["0"],
}
PRETRAIN_BAD = {
    "--seed": ["-1"], "--hidden": ["0", "12"], "--layers": ["0"], "--vocab-size": ["0"], "--steps": ["0"],
    "--batch": ["0"], "--lr": ["0", "nan"], "--beta2": ["1", "-0.1", "nan"], "--warmup": ["-1"],
    "--cfg-dropout": ["1", "-0.1", "nan"], "--und-weight": ["-1", "nan"], "--num-records": ["0"], "--threads": ["-1"],
    "--eval-per-tag": ["-1"],
}


def flag_cases(table):
    return [(flag, value) for flag, values in table.items() for value in values]


def number_flags(*classes) -> set:
    return {"--" + f.name.replace("_", "-") for cls in classes for f in dataclasses.fields(cls)
            if str(f.type).split(" ")[0] in ("int", "float")}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """cwd and UNIRL_CACHE in tmp_path; loading a model or pretraining fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded (or pretrained) before the flags were checked")

    monkeypatch.setattr(models, "load_policy", refuse)
    monkeypatch.setattr(train, "load_policy", refuse)  # train.py imports it by name at its top
    monkeypatch.setattr(pretrain, "pretrain", refuse)
    monkeypatch.setenv("UNIRL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file.jsonl").write_text("{}\n")
    (tmp_path / "a_folder").mkdir()
    return tmp_path


@pytest.fixture
def read_only(sandbox, monkeypatch):
    """A folder nobody may write into. Root writes whatever the mode bits say, so as root cli.writable is made to
    read them the way a user's permission check would."""
    folder = sandbox / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = cli.writable
        monkeypatch.setattr(cli, "writable", lambda f: real(f) and bool(os.stat(f).st_mode & 0o200))
    yield folder
    folder.chmod(0o755)


def fails_early(main, argv, flag, sandbox, match=None):
    """main(argv) raises a one-line ValueError naming `flag` (and `match`), and leaves no new folder behind."""
    before = sorted(p.relative_to(sandbox) for p in sandbox.rglob("*"))
    with pytest.raises(ValueError) as err:
        main(argv)
    message = str(err.value)
    assert flag in message and "\n" not in message, message
    assert match is None or match in message, message
    assert sorted(p.relative_to(sandbox) for p in sandbox.rglob("*")) == before


def test_every_number_flag_has_a_bad_value_here():
    assert number_flags(train.Config) == set(TRAIN_BAD)
    assert number_flags(evaluate.Config) == set(EVAL_BAD)
    assert number_flags(pretrain.PretrainConfig, pretrain.PretrainRun) == set(PRETRAIN_BAD)


@pytest.mark.parametrize("flag, value", flag_cases(TRAIN_BAD))
def test_train_numbers(sandbox, flag, value):
    fails_early(train.main, ["--model", "janus-tiny", "--out", "run", flag, value], flag, sandbox, f"{flag} {value}")


@pytest.mark.parametrize("flag, value", flag_cases(EVAL_BAD))
def test_evaluate_numbers(sandbox, flag, value):
    fails_early(evaluate.main, ["--model", "janus-tiny", "--geneval", "--out", "ev", flag, value], flag, sandbox,
                f"{flag} {value}")


@pytest.mark.parametrize("flag, value", flag_cases(PRETRAIN_BAD))
def test_pretrain_numbers(sandbox, flag, value):
    fails_early(pretrain.main, ["--out", "base", flag, value], flag, sandbox, f"{flag} {value}")


def test_sft_with_empty_groups(sandbox):
    fails_early(train.main, ["--model", "janus-tiny", "--mode", "sft", "--group-size", "0", "--out", "run"],
                "--group-size", sandbox)


@pytest.mark.parametrize("argv", [["--mode", "sft"], ["--grpo-on", "gen"], ["--answer-temperature", "0"],
                                  ["--couple"]])
@pytest.mark.parametrize("choice", ["agreement", "gated", "image-baseline"])
def test_voted_answers_need_sampled_grpo_answers(sandbox, argv, choice):
    fails_early(train.main, ["--model", "janus-tiny", "--answer-reward", choice, "--out", "run"] + argv,
                f"--answer-reward {choice}", sandbox)


def test_votes_without_an_answer_reward_that_reads_them(sandbox):
    fails_early(train.main, ["--model", "janus-tiny", "--votes", "5", "--out", "run"], "--votes 5", sandbox)


@pytest.mark.parametrize("argv", [["--model", "janus-tiny"], ["--grpo-on", "gen"], ["--mode", "sft"], ["--couple"],
                                  ["--prompts", "prompts.jsonl"]])
@pytest.mark.parametrize("choice", ["judged", "judged-shuffled"])
def test_judged_answers_need_the_shapes_world_and_grpo_answers(sandbox, argv, choice):
    (sandbox / "prompts.jsonl").write_text("")
    fails_early(train.main, ["--answer-reward", choice, "--out", "run"] + argv, f"--answer-reward {choice}", sandbox)


@pytest.mark.parametrize("argv", [["--grpo-on", "gen"], ["--mode", "sft"], ["--couple"]])
def test_counted_answers_need_grpo_answers_without_coupling(sandbox, argv):
    fails_early(train.main, ["--model", "janus-tiny", "--answer-reward", "counted", "--out", "run"] + argv,
                "--answer-reward counted", sandbox)


@pytest.mark.parametrize("argv", [["--grpo-on", "gen"], ["--mode", "sft"], ["--couple"],
                                  ["--answer-reward", "agreement"]])
def test_answer_keep_needs_grpo_answers_with_the_prompt_reward(sandbox, argv):
    fails_early(train.main, ["--model", "janus-tiny", "--answer-keep", "0.7", "--out", "run"] + argv, "--answer-keep",
                sandbox)


PATH_CASES = [  # (flag, value, words of the error)
    ("--prompts", "missing.jsonl", "no such file"), ("--prompts", "a_folder", "is a folder"),
    ("--exclude-prompts", "missing.jsonl", "no such file"), ("--exclude-prompts", "a_folder", "no such file"),
    ("--model-path", "missing/ckpt/folder", "no such folder"), ("--model-path", "a_file.jsonl", "is a file"),
    ("--resume", "missing", "no checkpoint"), ("--resume", "a_file.jsonl", "no checkpoint"),
    ("--out", "a_file.jsonl", "is a file"), ("--out", "a_file.jsonl/run", "is a file"),
]


@pytest.mark.parametrize("flag, value, words", PATH_CASES)
def test_train_paths(sandbox, flag, value, words):
    argv = ["--model", "janus-tiny"] + (["--out", "run"] if flag != "--out" else []) + [flag, value]
    fails_early(train.main, argv, flag, sandbox, words)


@pytest.mark.parametrize("flag, value, words", [
    ("--metadata", "missing.jsonl", "no such file"), ("--metadata", "a_folder", "is a folder"),
    ("--official-results", "missing.jsonl", "no such file"), ("--model-path", "./missing", "no such folder"),
    ("--model-path", "a_file.jsonl", "is a file"), ("--detector", "./missing", "no such folder"),
    ("--out", "a_file.jsonl", "is a file"),
])
def test_evaluate_paths(sandbox, flag, value, words):
    fails_early(evaluate.main, ["--model", "janus-tiny", "--geneval", flag, value], flag, sandbox, words)


def test_pretrain_out_must_be_a_base_folder(sandbox):
    fails_early(pretrain.main, ["--out", "a_file.jsonl"], "--out", sandbox, "is a file")
    fails_early(pretrain.main, ["--out", "a_folder"], "--out", sandbox, "not a pretrained shapes base")
    fails_early(pretrain.main, ["--family", "mamba"], "--family", sandbox)


def test_read_only_out_folders(sandbox, read_only):
    out = str(read_only / "run")
    fails_early(train.main, ["--model", "janus-tiny", "--out", out], "--out", sandbox, "cannot write")
    fails_early(evaluate.main, ["--model", "janus-tiny", "--geneval", "--out", out], "--out", sandbox, "cannot write")
    fails_early(pretrain.main, ["--out", out], "--out", sandbox, "cannot write")


def test_read_only_cache_fails_before_pretraining(sandbox, read_only, monkeypatch):
    """The shapes world pretrains its base into UNIRL_CACHE first (minutes): a cache we cannot write fails now."""
    monkeypatch.setenv("UNIRL_CACHE", str(read_only / "cache"))
    fails_early(train.main, ["--model", "shapes-janus", "--out", "run"], "UNIRL_CACHE", sandbox, "cannot write")
    fails_early(evaluate.main, ["--model", "shapes-janus", "--shapes"], "UNIRL_CACHE", sandbox, "cannot write")
    fails_early(pretrain.main, [], "UNIRL_CACHE", sandbox, "cannot write")


def test_valid_flags_reach_the_model_load(sandbox):
    """The control: the same commands with good flags pass validation and stop at the (refused) model load."""
    with pytest.raises(AssertionError, match="was loaded"):
        train.main(["--model", "janus-tiny", "--out", "run", "--warmup-steps", "2", "--kl-beta", "0"])
    with pytest.raises(AssertionError, match="was loaded"):
        pretrain.main(["--out", "base", "--hidden", "16"])


@pytest.mark.parametrize("command, argv, flag", [
    ([str(ROOT / "train.py")], ["--model", "janus-tiny", "--warmup-steps", "-1"], "--warmup-steps"),
    ([str(ROOT / "evaluate.py")], ["--model", "janus-tiny", "--geneval", "--temperature", "nan"], "--temperature"),
    (["-m", "shapes.pretrain"], ["--steps", "0"], "--steps"),
])
def test_command_line_exit_code_and_one_line(tmp_path, command, argv, flag):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "UNIRL_CACHE": str(tmp_path / "cache"),
           "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}  # -m finds the package from any folder
    done = subprocess.run([sys.executable, *command, *argv, "--out", str(tmp_path / "out")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} "), done.stderr
    assert list(tmp_path.iterdir()) == []
