"""Tests for evaluate.py and geneval/export.py: GenEval's folder layout file by file, seeding, resume,
results.json, the imbalance by hand, and the CLI end to end (one process and torchrun) with tiny random
Mask2Former and CLIP folders built locally. Nothing is downloaded."""

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_ok
from PIL import Image

import evaluate
import geneval
from geneval import export as geneval_export
import prompts
from generate import rollout

ROOT = Path(__file__).resolve().parents[1]
METADATA = Path(prompts.GENEVAL_METADATA)  # shipped in data/
PICKED = (0, 179, 259, 353)  # the first single_object, counting, colors and position prompts
CLASSES = ["bench", "clock", "fire hydrant", "teddy bear", "dog", "mouse"]  # detector labels; "mouse" is renamed


@pytest.fixture(scope="module")
def source_lines():
    lines = [line.strip() for line in METADATA.read_text().splitlines() if line.strip()]
    return [lines[i] for i in PICKED]


@pytest.fixture
def metadata(tmp_path, source_lines):
    path = tmp_path / "meta.jsonl"
    path.write_text("\n".join(source_lines) + "\n")
    return path


def flags(metadata, out, *extra):
    return ["--model", "janus-tiny", "--geneval", "--metadata", str(metadata), "--out", str(out),
            "--n-samples", "2", "--threads", "1", *extra]


def export(metadata, out, *extra):
    """One in-process run of the CLI; returns results.json."""
    evaluate.main(flags(metadata, out, "--scorer", "none", *extra))
    return json.loads((out / "results.json").read_text())


def png_arrays(out):
    return {str(p.relative_to(out)): np.asarray(Image.open(p)) for p in sorted(out.rglob("*.png"))}


# ---------------------------------------------------------------------------- layout

def test_export_has_geneval_layout_file_by_file(tmp_path, metadata, source_lines, janus_tiny):
    out = tmp_path / "out"
    result = export(metadata, out)
    assert sorted(os.listdir(out)) == ["00000", "00001", "00002", "00003", "export.json", "results.json"]
    side = janus_tiny.decode_images(torch.zeros(1, janus_tiny.num_image_tokens, dtype=torch.long)).shape[-1]
    for index, line in enumerate(source_lines):
        folder = out / f"{index:05d}"
        assert sorted(os.listdir(folder)) == ["grid.png", "metadata.jsonl", "samples"]
        text = (folder / "metadata.jsonl").read_text()
        assert text.strip() == line and len(text.strip().splitlines()) == 1  # the source line, verbatim
        with open(folder / "metadata.jsonl") as f:
            assert json.load(f) == json.loads(line)  # the official evaluator reads it with json.load
        assert sorted(os.listdir(folder / "samples")) == ["0000.png", "0001.png"]
        for name in ("0000.png", "0001.png"):
            image = Image.open(folder / "samples" / name)
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (side, side)
    # GenEval's walk: all-digit folders, files matching \d+\.png; nothing else it would read
    found = [(d, f) for d in os.listdir(out) if d.isdigit() and (out / d).is_dir()
             for f in os.listdir(out / d / "samples") if re.match(r"\d+\.png", f)]
    assert len(found) == 8 and all(len(d) == 5 for d, _ in found)
    assert result["prompts"] == 4 and result["images"] == 8 and result["written_this_run"] == 4


def test_saved_images_are_seeded_by_prompt_and_sample(tmp_path, metadata, janus_tiny):
    out = tmp_path / "out"
    export(metadata, out, "--batch-size", "3")  # batches that cut across prompts
    texts = [json.loads(line)["prompt"] for line in metadata.read_text().splitlines()]
    for i, k in [(1, 1), (3, 0)]:
        _, pixels = geneval_export.sample_images(janus_tiny, texts, [(i, k)], seed=0, cfg_scale=5.0, temperature=1.0)
        saved = Image.open(geneval_export.sample_path(out, i, k))
        assert np.array_equal(np.asarray(geneval_export.to_pil(pixels[0])), np.asarray(saved))


def test_batched_sampling_equals_rollout_per_image(janus_tiny):
    texts = ["a photo of a bench", "a photo of two clocks", "a photo of a dog right of a teddy bear"]
    jobs = [(0, 0), (0, 1), (2, 0), (1, 3)]
    ids, _ = geneval_export.sample_images(janus_tiny, texts, jobs, seed=7, cfg_scale=5.0, temperature=1.0)
    for row, (i, k) in enumerate(jobs):  # rollout(step=i, first_index=k) is image k of prompt i
        ro = rollout(janus_tiny, [{"prompt": texts[i]}], 1, seed=7, step=i, first_index=k, cfg_scale=5.0)
        assert torch.equal(ids[row], ro.image_ids[0]), (i, k)


def test_masked_decoding_batches_like_rollout_and_takes_steps():
    from models import load_policy

    showo = load_policy("showo-tiny").eval()  # parallel (MaskGIT-style) decoding
    texts = ["a photo of a bench", "a photo of two clocks"]
    jobs = [(0, 1), (1, 0), (1, 1)]
    ids, pixels = geneval_export.sample_images(showo, texts, jobs, seed=4, cfg_scale=2.0, temperature=1.0, steps=3)
    assert pixels.shape[0] == 3 and 0 <= pixels.min() and pixels.max() <= 1
    for row, (i, k) in enumerate(jobs):
        ro = rollout(showo, [{"prompt": texts[i]}], 1, seed=4, step=i, first_index=k, cfg_scale=2.0, timesteps=3)
        assert torch.equal(ids[row], ro.image_ids[0]), (i, k)
    default, _ = geneval_export.sample_images(showo, texts, jobs[:1], seed=4, cfg_scale=2.0, temperature=1.0)
    ro = rollout(showo, [{"prompt": texts[0]}], 1, seed=4, step=0, first_index=1, cfg_scale=2.0,
                 timesteps=showo.eval_timesteps)
    assert torch.equal(default[0], ro.image_ids[0])  # steps=None: the family's evaluation default (50)


# ---------------------------------------------------------------------------- resume

def test_resume_skips_complete_prompts_and_redoes_a_half_done_one(tmp_path, metadata, monkeypatch):
    out = tmp_path / "out"
    export(metadata, out)
    before, stamps = png_arrays(out), {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    (out / "00002" / "samples" / "0001.png").unlink()  # as after a crash of another tool
    (out / ".tmp-00003").mkdir()  # a leftover temporary folder
    drawn, sample = [], geneval_export.sample_images

    def counting(policy, texts, jobs, **kwargs):  # records which images get drawn
        drawn.extend(jobs)
        return sample(policy, texts, jobs, **kwargs)

    monkeypatch.setattr(geneval_export, "sample_images", counting)
    result = export(metadata, out)
    assert drawn == [(2, 0), (2, 1)] and result["written_this_run"] == 1 and not (out / ".tmp-00003").exists()
    after = png_arrays(out)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)  # same seeds
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if "00002" not in str(p))  # untouched
    drawn.clear()
    assert export(metadata, out)["written_this_run"] == 0 and drawn == []


def test_resume_refuses_a_folder_made_with_other_settings(tmp_path, metadata):
    out = tmp_path / "out"
    export(metadata, out)
    with pytest.raises(ValueError, match=r"other settings \(seed: 0 -> 1\)"):
        export(metadata, out, "--seed", "1")
    stranger = tmp_path / "stranger"
    (stranger / "00000").mkdir(parents=True)
    with pytest.raises(ValueError, match="no export.json"):
        export(metadata, stranger)


# ---------------------------------------------------------------------------- results.json

def test_results_json_records_every_setting(tmp_path, metadata):
    out = tmp_path / "out"
    s = export(metadata, out, "--cfg-scale", "3", "--temperature", "0.9", "--seed", "5", "--steps", "8")["settings"]
    assert s["metadata_sha256"] == hashlib.sha256(metadata.read_bytes()).hexdigest()
    assert (s["model"], s["model_path"], s["checkpoint_sha256"]) == ("janus-tiny", None, "built-in")
    assert (s["resolution"], s["num_image_tokens"], s["decoding"]) == ("128x128", 64, "ar")
    assert (s["cfg_scale"], s["temperature"], s["seed"], s["n_samples"]) == (3.0, 0.9, 5, 2)
    assert s["steps"] is None  # an autoregressive model has no decoding steps
    assert (s["scorer"], s["detector"], s["clip"], s["device"], s["world_size"]) == ("none", None, None, "cpu", 1)
    assert s["torch"] == torch.__version__ and s["python"].count(".") == 2 and s["transformers"]
    assert s["date"].endswith("+00:00") and s["self_qa"] is True
    pinned = json.loads((out / "export.json").read_text())
    assert pinned["seed"] == 5 and pinned["checkpoint_sha256"] == "built-in"


def test_checkpoint_hash_covers_weights_not_optimizer(tmp_path, janus_tiny):
    folder = tmp_path / "ckpt-000010"
    janus_tiny.save(folder)
    (folder / "optimizer.safetensors").write_bytes(b"moments")
    cfg = evaluate.Config(model="janus-tiny", model_path=str(folder))
    first = geneval_export.checkpoint_sha256(cfg, janus_tiny)
    sha, files = geneval_export.weights_sha256(folder)
    assert first == sha and "optimizer.safetensors" not in files and files
    (folder / "optimizer.safetensors").write_bytes(b"other moments")
    assert geneval_export.checkpoint_sha256(cfg, janus_tiny) == first
    with open(folder / files[0], "ab") as f:
        f.write(b"\0")
    assert geneval_export.checkpoint_sha256(cfg, janus_tiny) != first
    tensors = geneval_export.checkpoint_sha256(evaluate.Config(model="janus-pro-1b"), janus_tiny)  # not a local folder
    assert tensors.startswith("state-dict:") and len(tensors) == len("state-dict:") + 64


def test_geneval_prompts_ship_with_the_repository_and_a_missing_file_names_the_fix(tmp_path, monkeypatch, metadata):
    monkeypatch.chdir(tmp_path)  # found from any working folder, with no --metadata
    assert geneval_export.find_metadata(None) == ROOT / "data" / "geneval_metadata.jsonl"
    assert len(geneval_export.read_metadata(geneval_export.find_metadata(None))[1]) == 553
    assert geneval_export.find_metadata(str(metadata)) == metadata  # --metadata wins
    monkeypatch.setattr(prompts, "GENEVAL_METADATA", str(tmp_path / "gone.jsonl"))
    with pytest.raises(ValueError, match="gone.jsonl is missing.*git checkout -- data/.*--metadata"):
        geneval_export.find_metadata(None)
    with pytest.raises(ValueError, match="--geneval"):
        evaluate.validate(evaluate.Config())


# ---------------------------------------------------------------------------- imbalance and summaries

def test_imbalance_by_hand():
    judge = [True, True, False, False, True, False]
    own = [True, False, True, False, False, False]
    tags = ["a", "a", "b", "b", "a", "b"]
    b = evaluate.imbalance(judge, own, tags)
    # pairs: (T,T) (T,F) (F,T) (F,F) (T,F) (F,F)
    assert (b["n"], b["both_yes"], b["judge_yes_self_no"], b["judge_no_self_yes"], b["both_no"]) == (6, 1, 2, 1, 2)
    assert b["judge_yes_self_no_frac"] == pytest.approx(2 / 6) and b["judge_no_self_yes_frac"] == pytest.approx(1 / 6)
    assert b["disagree_frac"] == pytest.approx(3 / 6)
    assert (b["per_tag"]["a"]["judge_yes_self_no"], b["per_tag"]["a"]["judge_no_self_yes"], b["per_tag"]["a"]["n"]) == (2, 0, 3)
    assert (b["per_tag"]["b"]["judge_yes_self_no"], b["per_tag"]["b"]["judge_no_self_yes"], b["per_tag"]["b"]["n"]) == (0, 1, 3)
    empty = evaluate.imbalance([], [])
    assert empty["n"] == 0 and empty["judge_yes_self_no_frac"] is None
    with pytest.raises(ValueError):
        evaluate.imbalance([True], [])


def test_summarize_rows_and_flat_metrics_by_hand():
    rows = [{"index": 0, "tag": "counting", "prompt": "p0", "self_reward": 1.0, "judge": False},
            {"index": 0, "tag": "counting", "prompt": "p0", "self_reward": 0.5, "judge": True},
            {"index": 1, "tag": "colors", "prompt": "p1", "self_reward": 0.0, "judge": True},
            {"index": 1, "tag": "colors", "prompt": "p1", "self_reward": 1.0, "judge": True}]
    s = evaluate.summarize_rows(rows)
    assert s["self_qa"]["accuracy"] == 0.5 and s["self_qa"]["reward"] == pytest.approx(0.625)
    assert s["self_qa"]["per_tag"]["counting"] == {"n": 2, "reward": 0.75, "accuracy": 0.5, "correct": 1}
    assert s["judge"]["overall"] == pytest.approx((0.5 + 1.0) / 2) and s["judge"]["prompts"] == 2
    assert (s["imbalance"]["judge_yes_self_no"], s["imbalance"]["judge_no_self_yes"]) == (2, 1)
    m = evaluate.flat_metrics(s)
    assert m["eval/self_qa_acc"] == 0.5 and m["eval/judge_acc"] == pytest.approx(0.75)
    assert m["eval/self_qa_acc/colors"] == 0.5 and m["eval/judge_acc/counting"] == 0.5
    assert m["eval/judge_yes_self_no"] == 0.5 and m["eval/judge_no_self_yes"] == 0.25
    assert evaluate.summarize_rows([{"tag": "colors", "prompt": "p"}])["self_qa"] is None


def test_evaluate_policy_with_a_judge(janus_tiny, source_lines):
    records = [json.loads(line) for line in source_lines[:2]]  # raw GenEval lines: questions are added
    seen = []

    def judge(record, image):
        seen.append((record["question"], image.size))
        return (len(seen) % 2 == 1, "odd") if record["tag"] == "counting" else True

    janus_tiny.train()
    try:
        result = evaluate.evaluate_policy(janus_tiny, records, n_samples=2, seed=0, judge=judge, batch_size=3)
        assert janus_tiny.training  # the mode it came in with
    finally:
        janus_tiny.eval()
    assert len(seen) == 4 and all(size == (128, 128) for _, size in seen)
    assert [(r["index"], r["sample"], r["judge"]) for r in result["rows"]] == [
        (0, 0, True), (0, 1, True), (1, 0, True), (1, 1, False)]
    assert result["judge"]["tasks"]["counting"]["score"] == 0.5 and result["imbalance"]["n"] == 4
    assert result["self_qa"]["n"] == 4 and set(evaluate.flat_metrics(result)) >= {"eval/self_qa_acc", "eval/judge_acc"}
    again = evaluate.evaluate_policy(janus_tiny, records, n_samples=2, seed=0, batch_size=4)
    assert [r["answer"] for r in again["rows"]] == [r["answer"] for r in result["rows"]] and again["judge"] is None


# ---------------------------------------------------------------------------- scorer and CLI

@pytest.fixture(scope="module")
def scorer_folders(tmp_path_factory):
    """Tiny random Mask2Former and CLIP saved as local folders; "bench" is made a sure detection."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, Mask2FormerConfig, PreTrainedTokenizerFast, SwinConfig

    root = tmp_path_factory.mktemp("scorer")
    torch.manual_seed(0)
    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                      window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1, decoder_layers=2,
                               num_attention_heads=2, num_queries=4, id2label=dict(enumerate(CLASSES)),
                               label2id={n: i for i, n in enumerate(CLASSES)})
    segmenter = geneval.build_segmenter(config)
    with torch.no_grad():  # every query says "bench", so bench prompts pass and the others fail
        segmenter.class_predictor.bias[CLASSES.index("bench")] = 20.0
    segmenter.save_pretrained(root / "detector")
    words = sorted(set(" ".join(geneval.COLOR_TEMPLATES + geneval.COLORS + CLASSES + ["computer"]).replace(
        "{c}", " ").replace("{object}", " ").replace("-", " - ").split()))
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<bos>", "<eos>"] + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")
    clip = CLIPModel(CLIPConfig(projection_dim=16,
                                text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37,
                                                 num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                                 bos_token_id=2, eos_token_id=3, pad_token_id=0),
                                vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                                                   num_hidden_layers=1, num_attention_heads=2)))
    clip.save_pretrained(root / "clip")
    tokenizer.save_pretrained(root / "clip")
    return root / "detector", root / "clip"


def test_cli_scores_with_builtin_scorer_one_process_and_torchrun(tmp_path, metadata, scorer_folders):
    detector, clip = scorer_folders
    scoring = ["--detector", str(detector), "--clip", str(clip)]
    one, two = tmp_path / "one", tmp_path / "two"
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # as each torchrun rank below
    proc = run_ok([sys.executable, "evaluate.py", *flags(metadata, one, *scoring)], env=one_thread)
    assert "Overall score (avg. over tasks): 0.25000" in proc.stdout and "Imbalance over 8" in proc.stdout
    result = json.loads((one / "results.json").read_text())
    # bench (single_object) is always found; no clock, fire hydrant, dog or teddy bear ever passes 0.3
    assert {t: s["score"] for t, s in result["geneval"]["tasks"].items()} == {
        "single_object": 1.0, "counting": 0.0, "colors": 0.0, "position": 0.0}
    assert result["settings"]["scorer"] == "builtin" and len(result["settings"]["detector"]["sha256"]) == 64
    b = result["imbalance"]
    assert b["n"] == 8 and b["both_yes"] + b["judge_yes_self_no"] + b["judge_no_self_yes"] + b["both_no"] == 8
    assert b["both_yes"] + b["judge_yes_self_no"] == 2  # the two bench images
    rows = geneval.read_official_results(one / "results.jsonl")
    assert [r["filename"].split(os.sep)[-3:] for r in rows][:3] == [
        ["00000", "samples", "0000.png"], ["00000", "samples", "0001.png"], ["00001", "samples", "0000.png"]]
    assert geneval.summarize(rows) == result["geneval"]

    run_ok([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "evaluate.py", *flags(metadata, two, *scoring)], env=one_thread)
    files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*"))  # noqa: E731
    assert files(two) == files(one)
    a, b = png_arrays(one), png_arrays(two)
    assert all(np.array_equal(a[k], b[k]) for k in a)  # the same images on 1 and 2 ranks
    sharded = json.loads((two / "results.json").read_text())
    assert sharded["settings"]["world_size"] == 2
    for key in ("geneval", "self_qa", "imbalance"):
        assert sharded[key] == result[key], key


def test_official_results_drive_the_table_and_imbalance(tmp_path, metadata):
    out = tmp_path / "out"
    export(metadata, out)
    # the official evaluator's format: pandas escapes "/", paths from another machine, 7 of 8 images
    lines = [json.dumps({"filename": f"/data/x/{i:05d}/samples/{k:04d}.png", "tag": tag, "prompt": f"p{i}",
                         "correct": i == 0, "reason": "", "metadata": json.dumps({"i": i}), "details": "{}"}
                        ).replace("/", "\\/") for i, tag in enumerate(["single_object", "counting", "colors", "position"])
             for k in range(2) if (i, k) != (3, 1)]
    official = tmp_path / "official.jsonl"
    official.write_text("\n".join(lines) + "\n")
    result = export(metadata, out, "--official-results", str(official))
    assert result["settings"]["scorer"] == "official" and result["written_this_run"] == 0
    assert result["geneval"]["images"] == 7 and result["geneval"]["tasks"]["single_object"]["score"] == 1.0
    assert result["imbalance"]["n"] == 7
    assert result["settings"]["official_results"]["sha256"] == hashlib.sha256(official.read_bytes()).hexdigest()


def test_geneval_judge_wraps_the_builtin_scorer(janus_tiny, source_lines, scorer_folders):
    scorer = geneval.GenEvalScorer.from_pretrained(*map(str, scorer_folders), device="cpu")
    records = [json.loads(line) for line in source_lines[:2]]  # a bench (always found) and two clocks (never)
    result = evaluate.evaluate_policy(janus_tiny, records, n_samples=1, judge=evaluate.geneval_judge(scorer))
    assert [r["judge"] for r in result["rows"]] == [True, False]
    assert result["rows"][1]["reason"] == "expected clock>=2, found 0"
