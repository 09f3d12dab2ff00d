"""Tests for geneval/: GenEval's rules on hand-made detections, then the model path end to end
with tiny random Mask2Former / CLIP models built locally (nothing is downloaded)."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import geneval
import prompts
from geneval import Detection, evaluate_image, filter_detections, relative_position

torch.set_num_threads(1)
METADATA = Path(prompts.GENEVAL_METADATA)  # shipped in data/


def det(name, score=0.95, box=(0, 0, 10, 10)):
    return Detection(name, score, tuple(float(v) for v in box))


def by_class(*dets):
    return filter_detections(list(dets), tag="any")


# ---------------------------------------------------------------------------- filter_detections

def test_threshold_is_strict_and_03():
    dets = [det("cat", 0.31), det("cat", 0.30), det("cat", 0.29), det("dog", 0.3001)]
    kept = filter_detections(dets, "two_object")
    assert [d.score for d in kept["cat"]] == [0.31] and [d.score for d in kept["dog"]] == [0.3001]


def test_counting_uses_09_for_every_class_of_the_image():
    dets = [det("cat", 0.91), det("cat", 0.89), det("dog", 0.85)]
    kept = filter_detections(dets, "counting")
    assert [d.score for d in kept["cat"]] == [0.91] and "dog" not in kept
    assert len(filter_detections(dets, "colors")["cat"]) == 2  # other tags: 0.3


def test_at_most_16_per_class_best_first_no_nms():
    scores = [0.4 + 0.02 * i for i in range(20)]
    kept = filter_detections([det("cup", s) for s in scores], "single_object")["cup"]
    assert [d.score for d in kept] == sorted(scores, reverse=True)[:16]  # identical boxes: no NMS


# ---------------------------------------------------------------------------- relative_position

def shifted_box(ox, oy):
    """A 10x10 box whose centre is (ox, oy) away from that of B = (0, 0, 10, 10)."""
    return (ox, oy, ox + 10, oy + 10)


@pytest.mark.parametrize("target, expected_x", [(0.51, True), (0.49, False)])
def test_position_cutoff_after_shrinking(target, expected_x):
    # Both boxes are 10 wide, so each axis shrinks by 0.1 * (10 + 10) = 2: dx = (ox - 2) / |(ox, oy)|.
    ox = 50.0
    oy = math.sqrt(((ox - 2) / target) ** 2 - ox ** 2)  # solves (ox - 2) / hypot(ox, oy) = target
    b = (0, 0, 10, 10)
    a = shifted_box(ox, oy)
    assert (oy - 2) / math.hypot(ox, oy) > 0.5  # y points down: A is below B either way
    assert relative_position(a, b) == ({"right of", "below"} if expected_x else {"below"})
    assert relative_position(b, a) == ({"left of", "above"} if expected_x else {"above"})
    a_t = shifted_box(oy, ox)  # same numbers with the axes swapped test the y cut-off
    assert relative_position(a_t, b) == ({"below", "right of"} if expected_x else {"right of"})
    assert relative_position(b, a_t) == ({"above", "left of"} if expected_x else {"left of"})


def test_position_no_relation_when_both_shrunk_components_vanish():
    assert relative_position((0, 0, 10, 10), (1, 1, 11, 11)) == set()  # |offset| 1 < shrink 2 on both axes
    assert relative_position((30, 1, 40, 11), (0, 0, 10, 10)) == {"right of"}  # y shrinks to 0, x does not


def test_position_threshold_is_a_parameter():
    a, b = (12, 0, 22, 10), (0, 0, 10, 10)  # centres 12 apart, shrink 0.1*20 = 2 or 0.6*20 = 12
    assert relative_position(a, b) == {"right of"} and relative_position(a, b, threshold=0.6) == set()


# ---------------------------------------------------------------------------- evaluate_image

def test_single_and_two_object():
    single = {"tag": "single_object", "include": [{"class": "cat", "count": 1}]}
    assert evaluate_image(single, by_class(det("cat"))) == (True, "")
    assert evaluate_image(single, by_class(det("dog"))) == (False, "expected cat>=1, found 0")
    two = {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}]}
    assert evaluate_image(two, by_class(det("cat"), det("dog")))[0]
    assert evaluate_image(two, by_class(det("cat"), det("cat", 0.9))) == (False, "expected dog>=1, found 0")


def test_counting_is_exact_with_the_exclude_clause():
    meta = {"tag": "counting", "include": [{"class": "clock", "count": 3}],
            "exclude": [{"class": "clock", "count": 4}]}

    def run(scores):
        return evaluate_image(meta, filter_detections([det("clock", s) for s in scores], "counting"))
    assert run([0.95, 0.95, 0.95]) == (True, "")
    assert run([0.95, 0.95, 0.95, 0.85]) == (True, "")  # the fourth is under the 0.9 counting cut
    assert run([0.95] * 4) == (False, "expected clock<4, found 4")
    assert run([0.95, 0.95, 0.89]) == (False, "expected clock>=3, found 2")


def test_color_vote_uses_only_the_top_count_objects():
    colors = {(0.0, 0.0, 10.0, 10.0): "red", (20.0, 0.0, 30.0, 10.0): "blue", (40.0, 0.0, 50.0, 10.0): "red"}
    asked = []

    def color_of(d):
        asked.append(d.box)
        return colors[d.box]
    one = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}
    cars = [det("car", 0.9, (0, 0, 10, 10)), det("car", 0.8, (20, 0, 30, 10)), det("car", 0.7, (40, 0, 50, 10))]
    assert evaluate_image(one, by_class(*cars), color_of) == (True, "") and len(asked) == 1
    blue_first = [det("car", 0.95, (20, 0, 30, 10))] + cars
    ok, reason = evaluate_image(one, by_class(*blue_first), color_of)
    assert not ok and reason == "expected red car>=1, found 0 red; and 1 blue"
    two = {"tag": "colors", "include": [{"class": "car", "count": 2, "color": "red"}]}
    assert not evaluate_image(two, by_class(*cars), color_of)[0]  # top two: red, blue
    assert evaluate_image(two, by_class(cars[0], cars[2]), color_of)[0]  # at least `count` red
    with pytest.raises(ValueError):
        evaluate_image(one, by_class(*cars), None)


def test_color_attr_needs_both_colours():
    meta = {"tag": "color_attr", "include": [{"class": "cup", "count": 1, "color": "purple"},
                                             {"class": "apple", "count": 1, "color": "black"}]}
    dets = by_class(det("cup"), det("apple"))
    assert evaluate_image(meta, dets, lambda d: {"cup": "purple", "apple": "black"}[d.name])[0]
    assert not evaluate_image(meta, dets, lambda d: "purple")[0]


def test_position_every_object_against_every_target():
    meta = {"tag": "position", "include": [{"class": "kite", "count": 1},
                                           {"class": "cup", "count": 1, "position": ["above", 0]}]}
    kite, cup_above = det("kite", 0.9, (0, 100, 10, 110)), det("cup", 0.9, (0, 0, 10, 10))
    assert evaluate_image(meta, by_class(kite, cup_above)) == (True, "")
    # a weaker kite on the other side is not in the top-`count` group, so it does not matter
    assert evaluate_image(meta, by_class(kite, cup_above, det("kite", 0.5, (0, -100, 10, -90))))[0]
    ok, reason = evaluate_image(meta, by_class(kite, det("cup", 0.9, (0, 200, 10, 210))))
    assert not ok and reason == "expected cup above target, found below target"
    ok, reason = evaluate_image(meta, by_class(cup_above))  # missing target group
    assert not ok and reason == "expected kite>=1, found 0\nno target for cup to be above"
    # with count 2 every kept cup must be above every kept kite
    meta2 = {"include": [{"class": "kite", "count": 2}, {"class": "cup", "count": 1, "position": ["above", 0]}]}
    kites = [kite, det("kite", 0.8, (200, 100, 210, 110))]
    assert evaluate_image(meta2, by_class(*kites, det("cup", 0.9, (100, -300, 110, -290))))[0]  # high, in between
    ok, reason = evaluate_image(meta2, by_class(*kites, cup_above))  # above kite 1, but mostly left of kite 2
    assert not ok and reason == "expected cup above target, found left of target"


def test_position_reason_names_the_relations_in_a_fixed_order():
    """A set's iteration order changes with the interpreter's string hashing; the reason must not."""
    meta = {"tag": "position", "include": [{"class": "kite", "count": 1},
                                           {"class": "cup", "count": 1, "position": ["above", 0]}]}
    kite = det("kite", 0.9, (0, 0, 10, 10))
    ok, reason = evaluate_image(meta, by_class(kite, det("cup", 0.9, (100, 100, 110, 110))))  # diagonal
    assert not ok and reason == "expected cup above target, found below and right of target"
    ok, reason = evaluate_image(meta, by_class(kite, det("cup", 0.9, (1, 1, 11, 11))))  # overlapping
    assert not ok and reason == "expected cup above target, found no relation to target"


def ideal_scene(meta):
    """Detections that satisfy a GenEval prompt: count objects per include, related boxes 100px apart."""
    step = {"left of": (-100, 0), "right of": (100, 0), "above": (0, -100), "below": (0, 100)}
    dets, origins = [], []
    for req in meta["include"]:
        x, y = 500, 500
        if "position" in req:
            dx, dy = step[req["position"][0]]
            x, y = origins[req["position"][1]][0] + dx, origins[req["position"][1]][1] + dy
        origins.append((x, y))
        dets += [det(req["class"], 0.95, (x, y, x + 10, y + 10)) for _ in range(req["count"])]
    return dets


def test_every_official_prompt_passes_its_ideal_scene_and_fails_an_empty_one():
    with open(METADATA) as f:
        prompts = [json.loads(line) for line in f if line.strip()]
    assert len(prompts) == 553 and len({p["tag"] for p in prompts}) == 6
    for meta in prompts:
        wanted = {r["class"]: r.get("color") for r in meta["include"]}
        kept = filter_detections(ideal_scene(meta), meta["tag"])
        assert evaluate_image(meta, kept, lambda d: wanted[d.name]) == (True, ""), meta["prompt"]
        assert not evaluate_image(meta, {}, lambda d: "red")[0]


# ---------------------------------------------------------------------------- summarize / table

def hand_results():
    # (tag, prompt, correct) per image; per-tag: 4/4, 1/2, 1/4, 2/2, 0/2, 1/2
    rows = [("single_object", "p0", c) for c in (1, 1, 1, 1)] + [("two_object", "p1", c) for c in (0, 1)]
    rows += [("counting", "p2", 0), ("counting", "p2", 0), ("counting", "p3", 1), ("counting", "p3", 0)]
    rows += [("colors", "p4", 1), ("colors", "p4", 1), ("position", "p5", 0), ("position", "p6", 0)]
    rows += [("color_attr", "p7", 1), ("color_attr", "p7", 0)]
    return [{"tag": t, "prompt": p, "correct": bool(c), "metadata": json.dumps({"tag": t, "prompt": p})}
            for t, p, c in rows]


def test_summary_overall_is_mean_of_tag_means():
    summary = geneval.summarize(hand_results())
    assert summary["overall"] == pytest.approx((1 + 0.5 + 0.25 + 1 + 0 + 0.5) / 6)  # 0.54167, not 9/16
    assert summary["correct_images"] == pytest.approx(9 / 16)
    assert summary["prompts"] == 8 and summary["correct_prompts"] == pytest.approx(5 / 8)  # p2, p5, p6 fail
    tags = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
    assert list(summary["tasks"]) == tags  # first-appearance order, like summary_scores.py
    table = geneval.format_table(summary)
    assert "counting         = 25.00% (1 / 4)" in table
    assert table.endswith("Overall score (avg. over tasks): 0.54167")


def test_official_results_print_through_the_same_table(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    # pandas' to_json escapes "/" and stores metadata and details as JSON strings
    lines = [json.dumps({"filename": "out\\/00000\\/samples\\/0000.png", **r, "reason": "", "details": "{}"})
             for r in hand_results()]
    path.write_text("\n".join(lines) + "\n")
    rows = geneval.read_official_results(path)
    assert geneval.summarize(rows) == geneval.summarize(hand_results())
    geneval.main([str(path)])  # the CLI prints the same table for a results file
    assert capsys.readouterr().out.strip() == geneval.format_table(geneval.summarize(hand_results()))


# ---------------------------------------------------------------------------- detector post-processing

def test_postprocess_topk_scores_and_boxes_by_hand():
    class_logits = torch.tensor([[0.0, 5.0, 0.0], [1.0, 1.0, 3.0], [3.0, 0.0, 0.0]])  # (Q=3, C+1=3)
    masks = torch.full((3, 8, 8), -2.0)
    masks[0, 1:3, 2:5] = 2.0
    masks[0, 7, :] = 2.0   # in the padding: must be cropped away
    masks[1] = -3.0        # empty mask
    masks[2, 5, :] = 1.0
    labels, scores, boxes, binary = geneval.postprocess_instances(class_logits, masks, (8, 8), (6, 8), (6, 8), 2)
    # the best (query, class) pairs: (q0, class 1) with e^5/(e^5+2), then (q2, class 0) with e^3/(e^3+2)
    assert labels.tolist() == [1, 0]
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [math.exp(5) / (math.exp(5) + 2) * sigmoid(2.0), math.exp(3) / (math.exp(3) + 2) * sigmoid(1.0)]
    assert scores.tolist() == pytest.approx(expected, rel=1e-5)
    assert boxes.tolist() == [[2, 1, 5, 3], [0, 5, 8, 6]]  # (x0, y0, x1, y1), ends exclusive
    assert binary.shape == (2, 6, 8) and binary[0].sum() == 6
    assert geneval.masks_to_boxes(torch.zeros(1, 4, 4, dtype=torch.bool)).tolist() == [[0, 0, 0, 0]]


def test_postprocess_upsamples_crops_padding_then_resizes():
    masks = torch.full((1, 4, 4), -5.0)
    masks[0, :2, :2] = 5.0  # top-left quarter of the padded input
    class_logits = torch.tensor([[4.0, 0.0]])
    # padded 8x8, image content is the top 4 rows only, original image is 8 x 16
    _, _, boxes, binary = geneval.postprocess_instances(class_logits, masks, (8, 8), (4, 8), (8, 16))
    assert binary.shape == (1, 8, 16)
    assert boxes.tolist() == [[0, 0, 8, 8]]  # full height: the padding rows were dropped before resizing


def test_fit_size_and_detector_pixels():
    assert geneval.fit_size(512, 512) == (800, 800)
    assert geneval.fit_size(40, 30) == (1067, 800)
    assert geneval.fit_size(3000, 1000) == (1333, 444)
    image = Image.new("RGB", (48, 40), (200, 100, 50))
    pixels, (h, w) = geneval.detector_pixels(image, scale=(96, 64))
    assert (h, w) == (64, 77) and pixels.shape == (1, 3, 64, 96)
    mean, std = torch.tensor(geneval.IMAGENET_MEAN), torch.tensor(geneval.IMAGENET_STD)
    assert torch.allclose(pixels[0, :, 10, 10], (torch.tensor([200.0, 100, 50]) - mean) / std)
    assert torch.allclose(pixels[0, :, 10, 90], (128 - mean) / std)  # grey padding, then normalised


# ---------------------------------------------------------------------------- tiny real models

@pytest.fixture(scope="module")
def tiny_detector():
    from transformers import Mask2FormerConfig, SwinConfig
    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                      window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    names = ["dog", "cat", "mouse", "bench"]  # "mouse" is detectron2's name for GenEval's "computer mouse"
    config = Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1, decoder_layers=2,
                               num_attention_heads=2, num_queries=6, id2label=dict(enumerate(names)),
                               label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(0)
    return geneval.Mask2FormerDetector(geneval.build_segmenter(config), scale=(96, 64))


@pytest.fixture(scope="module")
def tiny_colors():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast
    text = " ".join(geneval.COLOR_TEMPLATES + geneval.COLORS + ["dog cat computer mouse bench"])
    words = sorted(set(text.replace("{c}", " ").replace("{object}", " ").replace("-", " - ").split()))
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<bos>", "<eos>"] + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                           special_tokens=[("<bos>", 2), ("<eos>", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")
    config = CLIPConfig(projection_dim=16,
                        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                         bos_token_id=2, eos_token_id=3, pad_token_id=0),
                        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                                           num_hidden_layers=1, num_attention_heads=2))
    torch.manual_seed(0)
    return geneval.ClipColorClassifier(CLIPModel(config), tokenizer)


def noise_image(w=48, h=40, seed=0):
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))


def test_tiny_detector_outputs(tiny_detector):
    dets = tiny_detector(noise_image())
    assert len(dets) == 6 * 4  # every (query, class) pair fits under the top-100 cap
    assert {d.name for d in dets} <= {"dog", "cat", "computer mouse", "bench"}
    for d in dets:
        x0, y0, x1, y1 = d.box
        assert 0 <= d.score <= 1 and 0 <= x0 <= x1 <= 48 and 0 <= y0 <= y1 <= 40
        assert d.mask.shape == (40, 48) and d.mask.dtype == bool
        if d.mask.any():  # the box is the tight box of the mask
            ys, xs = np.nonzero(d.mask)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_color_head_is_normalised_template_average(tiny_colors):
    head = tiny_colors.head("dog")
    assert head.shape == (16, 10) and torch.allclose(head.norm(dim=0), torch.ones(10), atol=1e-5)
    texts = ["a photo of a green dog", "a photo of a green-colored dog", "a photo of a green object"]
    with torch.no_grad():  # one template at a time: no padding involved
        embeds = [geneval._pooled(tiny_colors.model.get_text_features(**{
            k: v for k, v in tiny_colors.tokenizer([t], return_tensors="pt").items() if k != "token_type_ids"}))[0]
            for t in texts]
    mean = torch.stack([e / e.norm() for e in embeds]).mean(0)
    assert torch.allclose(head[:, geneval.COLORS.index("green")], mean / mean.norm(), atol=1e-5)


def test_object_crop_and_clip_pixels():
    image = Image.fromarray(np.full((4, 6, 3), 10, np.uint8))
    mask = np.zeros((4, 6), bool)
    mask[1, 1:4] = True
    mask[2, 2] = True
    crop = np.asarray(geneval.object_crop(image, Detection("cup", 0.9, (1.0, 1.0, 4.0, 3.0), mask)))
    assert crop.shape == (2, 3, 3)
    assert (crop[0] == 10).all() and (crop[1, 1] == 10).all() and (crop[1, 0] == 153).all()  # #999 elsewhere
    pixels = geneval.clip_pixels(Image.new("RGB", (40, 20), (255, 0, 0)), 32)
    assert pixels.shape == (3, 32, 32)
    red = (torch.tensor([1.0, 0, 0]) - torch.tensor(geneval.CLIP_MEAN)) / torch.tensor(geneval.CLIP_STD)
    assert torch.allclose(pixels[:, 16, 16], red, atol=1e-5)


def write_geneval_folder(root, prompts):
    """GenEval's layout, plus names the official walk skips."""
    for index, meta in enumerate(prompts):
        samples = root / f"{index:05}" / "samples"
        samples.mkdir(parents=True)
        (root / f"{index:05}" / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
        for k in range(2):
            noise_image(seed=10 * index + k).save(samples / f"{k:04}.png")
        noise_image().save(root / f"{index:05}" / "grid.png")
        noise_image().save(samples / "grid.png")
        (samples / "notes.txt").write_text("skip me")
    (root / "logs").mkdir()


def test_scorer_on_an_image_and_a_folder(tiny_detector, tiny_colors, tmp_path):
    # threshold 0 keeps the random model's weak detections so the colour and position paths run
    scorer = geneval.GenEvalScorer(tiny_detector, tiny_colors, threshold=0.0)
    red_dog = {"class": "dog", "count": 1, "color": "red"}
    colors_meta = {"tag": "colors", "prompt": "a red dog", "include": [red_dog]}
    result = scorer.score_image(noise_image(), colors_meta)
    assert isinstance(result["correct"], bool) and isinstance(result["reason"], str)
    assert result["tag"] == "colors" and json.loads(result["metadata"]) == colors_meta
    assert 0 < len(result["detections"]["dog"]) <= 16
    assert result["correct"] == (tiny_colors.classify(noise_image(), result["detections"]["dog"][:1]) == ["red"])
    for name, boxes in json.loads(result["details"]).items():
        assert all(0 <= b[0] <= b[2] <= 48 and 0 <= b[1] <= b[3] <= 40 and 0 <= b[4] <= 1 for b in boxes)

    position_meta = {"tag": "position", "prompt": "a cat right of a bench",
                     "include": [{"class": "bench", "count": 1}, {"class": "cat", "count": 1,
                                                                  "position": ["right of", 0]}]}
    root = tmp_path / "geneval"
    write_geneval_folder(root, [colors_meta, position_meta])
    results = scorer.score_folder(str(root))
    assert len(results) == 4  # 2 prompts x 2 samples; grid.png, notes.txt and logs/ skipped
    assert sorted(os.listdir(root)) == ["00000", "00001", "logs", "results.jsonl"]  # no temporary file left
    rows = geneval.read_official_results(root / "results.jsonl")
    assert [r["filename"].split(os.sep)[-3:] for r in rows][:2] == [["00000", "samples", "0000.png"],
                                                                     ["00000", "samples", "0001.png"]]
    assert set(rows[0]) == {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}
    summary = geneval.summarize(rows)
    assert summary["images"] == 4 and summary["prompts"] == 2 and set(summary["tasks"]) == {"colors", "position"}
    assert "Overall score" in geneval.format_table(summary)


def test_from_pretrained_loads_local_folders(tiny_detector, tiny_colors, tmp_path):
    tiny_detector.model.save_pretrained(tmp_path / "detector")
    tiny_colors.model.save_pretrained(tmp_path / "clip")
    tiny_colors.tokenizer.save_pretrained(tmp_path / "clip")
    scorer = geneval.GenEvalScorer.from_pretrained(str(tmp_path / "detector"), str(tmp_path / "clip"), device="cpu")
    assert scorer.detector.scale == (1333, 800)  # mmdet's test size: the 48x40 image runs at 960x800
    image = noise_image()
    loaded, reference = scorer.detector(image), geneval.Mask2FormerDetector(tiny_detector.model)(image)
    assert [(d.name, d.box) for d in loaded] == [(d.name, d.box) for d in reference]
    assert [d.score for d in loaded] == pytest.approx([d.score for d in reference], abs=1e-5)
    assert torch.allclose(scorer.colors.head("cat"), tiny_colors.head("cat"), atol=1e-5)


def test_segmenter_loads_a_released_style_checkpoint_and_matches_its_head(tiny_detector, tmp_path, monkeypatch):
    """The scorer's segmenter builds no training loss (so it needs no scipy) and computes exactly what
    transformers' Mask2FormerForUniversalSegmentation computes from the same checkpoint."""
    from transformers import Mask2FormerForUniversalSegmentation
    from transformers.models.mask2former import modeling_mask2former

    assert not hasattr(tiny_detector.model, "criterion")
    # the reference head insists on scipy for its loss; this test only runs it forward
    monkeypatch.setattr(modeling_mask2former, "requires_backends", lambda *args, **kwargs: None)
    torch.manual_seed(1)
    reference = Mask2FormerForUniversalSegmentation(tiny_detector.model.config).eval()
    reference.save_pretrained(tmp_path / "released")  # holds the loss's criterion.empty_weight, as the hub's does
    monkeypatch.undo()
    loaded = geneval.build_segmenter(str(tmp_path / "released")).eval()
    pixels = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected, (class_logits, mask_logits) = reference(pixel_values=pixels), loaded(pixels)
    assert torch.equal(class_logits, expected.class_queries_logits)
    assert torch.equal(mask_logits, expected.masks_queries_logits)
