"""Tests for the shapes world: exact tokenizer round trip, GenEval's rules case by case, ground truth, the split."""
import collections
import io
import itertools
import os
import random
import sys

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import prompts  # noqa: E402
import shapes  # noqa: E402
from shapes import GRID, NUM_CELLS, NUM_CODES, SIZE  # noqa: E402


def scene(*objects):
    """codes from (row, col, shape, color) tuples."""
    return shapes.scene_to_codes({(r, c): (s, col) for r, c, s, col in objects})


def random_codes(rng, batch):
    """(B, N) codes, each cell uniform over all codes (empty included)."""
    return torch.randint(0, NUM_CODES, (batch, NUM_CELLS), generator=rng)


# ----------------------------------------------------------------------------------------------
# Tokenizer


def test_vocabulary():
    assert len(shapes.SHAPES) >= 6 and len(shapes.COLORS) >= 6
    assert NUM_CODES == 1 + len(shapes.SHAPES) * len(shapes.COLORS)
    geneval_colors = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"}
    assert set(shapes.COLORS) <= geneval_colors
    assert len(set(shapes.PALETTE.values()) | {shapes.BACKGROUND}) == len(shapes.COLORS) + 1
    codes = [shapes.encode_cell(s, c) for s in shapes.SHAPES for c in shapes.COLORS]
    assert sorted(codes) == list(range(1, NUM_CODES))
    assert all(shapes.encode_cell(*shapes.decode_cell(k)) == k for k in range(1, NUM_CODES))


def test_tiles_are_distinct_and_exact():
    tiles = shapes.code_tiles().reshape(NUM_CODES, -1)
    assert len({t.tobytes() for t in tiles}) == NUM_CODES  # no two codes look the same
    colors = {tuple(p) for p in shapes.code_tiles().reshape(-1, 3)}
    assert colors == set(shapes.PALETTE.values()) | {shapes.BACKGROUND}  # no blended (anti-aliased) pixel
    masks = [shapes._shape_mask(s) for s in shapes.SHAPES]
    for m in masks:  # mirror-symmetric and off the cell border
        assert np.array_equal(m, m[:, ::-1]) and not (m[0].any() or m[-1].any() or m[:, 0].any())


def test_scene_codes_inverse():
    sc = {(0, 1): ("circle", "red"), (3, 3): ("cross", "purple"), (2, 0): ("ring", "yellow")}
    codes = shapes.scene_to_codes(sc)
    assert codes.shape == (NUM_CELLS,) and codes.dtype == torch.long
    assert shapes.codes_to_scene(codes) == sc
    assert shapes.codes_to_scene(codes.tolist()) == sc
    assert shapes.describe(codes) == "red circle (0, 1); yellow ring (2, 0); purple cross (3, 3)"
    assert shapes.describe(torch.zeros(NUM_CELLS, dtype=torch.long)) == "empty"


def test_round_trip_exact_for_every_code_in_every_cell():
    rng = torch.Generator().manual_seed(0)
    codes = random_codes(rng, 400)  # (400, 16)
    # every code appears in every cell at least once: 400 draws from 37 codes per cell
    assert all(len(set(codes[:, i].tolist())) == NUM_CODES for i in range(NUM_CELLS))
    images = shapes.render_codes(codes)
    assert isinstance(images, list) and len(images) == 400
    assert images[0].size == (SIZE, SIZE) and images[0].mode == "RGB"
    parsed = torch.stack([shapes.parse_image(img) for img in images])
    assert torch.equal(parsed, codes)


def test_round_trip_through_tensor_array_png_and_noise():
    rng = torch.Generator().manual_seed(1)
    codes = random_codes(rng, 50)
    pixels = shapes.render_tensor(codes)  # (B, 3, H, W)
    assert pixels.shape == (50, 3, SIZE, SIZE) and pixels.dtype == torch.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    for code, pix in zip(codes, pixels):
        assert torch.equal(shapes.parse_image(pix), code)  # float tensor in [0, 1]
        array = (pix.permute(1, 2, 0) * 255).round().byte().numpy()
        assert torch.equal(shapes.parse_image(array), code)  # uint8 (H, W, 3)
    buf = io.BytesIO()  # PNG is lossless, so a saved image parses back exactly
    shapes.render_codes(codes[0]).save(buf, format="PNG")
    assert torch.equal(shapes.parse_image(Image.open(io.BytesIO(buf.getvalue()))), codes[0])
    assert torch.equal(shapes.parse_image(pixels), codes)  # a batch (B, 3, H, W) -> (B, N)
    noisy = (pixels + 0.1 * torch.randn(pixels.shape, generator=rng)).clamp(0, 1)  # nearest tile is robust
    assert all(torch.equal(shapes.parse_image(p), c) for p, c in zip(noisy, codes))


def test_render_single_vs_batch():
    codes = scene((1, 2, "triangle", "green"))
    image = shapes.render_codes(codes)
    assert isinstance(image, Image.Image)
    assert np.array_equal(np.asarray(image), np.asarray(shapes.render_codes(codes[None])[0]))
    assert np.array_equal(np.asarray(image), np.asarray(shapes.render_codes(codes.tolist())))
    pixels = np.asarray(image)  # the shape is drawn inside its own cell only
    c = shapes.CELL
    assert (pixels[c:2 * c, 2 * c:3 * c] != 255).any()
    outside = pixels.copy()
    outside[c:2 * c, 2 * c:3 * c] = 255
    assert (outside == 255).all()


# ----------------------------------------------------------------------------------------------
# GenEval's position rule


def rel(a, b):
    """Relations of cell a = (row, col) relative to cell b."""
    return shapes.relative_position(shapes.cell_box(*a), shapes.cell_box(*b))


def test_relative_position_on_cells():
    assert rel((1, 1), (1, 1)) == set()  # same box: no relation
    assert rel((1, 2), (1, 1)) == {"right of"}
    assert rel((1, 0), (1, 3)) == {"left of"}
    assert rel((0, 2), (3, 2)) == {"above"}
    assert rel((2, 2), (1, 2)) == {"below"}
    assert rel((2, 2), (1, 1)) == {"right of", "below"}  # diagonal neighbours: 0.8 / sqrt(2) > 0.5 on both axes
    assert rel((2, 3), (1, 1)) == {"right of"}  # (1.8, 0.8) / sqrt(5) = (0.80, 0.36)
    assert rel((3, 2), (1, 1)) == {"below"}
    assert rel((3, 2), (0, 0)) == {"below"}  # (1.8, 2.8) / sqrt(13) = (0.499, 0.777): x just misses
    assert rel((3, 3), (0, 0)) == {"right of", "below"}


def test_cell_box_vs_tight_box():
    # Every silhouette spans the inner box (the cell less a 1-pixel margin), so the tight box of any
    # shape is that inner box. The verdicts differ only for centre offsets of 3 cells by 2.
    for shape in shapes.SHAPES:
        ys, xs = np.nonzero(shapes._shape_mask(shape))
        assert (ys.min(), ys.max(), xs.min(), xs.max()) == (1, shapes.CELL - 2, 1, shapes.CELL - 2)
    tight = lambda r, c: tuple(v + d for v, d in zip(shapes.cell_box(r, c), (1, 1, -1, -1)))
    cells = [divmod(i, GRID) for i in range(NUM_CELLS)]
    differ = [(a, b) for a in cells for b in cells
              if shapes.relative_position(shapes.cell_box(*a), shapes.cell_box(*b))
              != shapes.relative_position(tight(*a), tight(*b))]
    assert differ and all(sorted([abs(a[0] - b[0]), abs(a[1] - b[1])]) == [2, 3] for a, b in differ)


def test_relative_position_threshold():
    # Overlapping boxes whose centres differ by less than 0.1 * (sum of sizes): no relation at all.
    assert shapes.relative_position((0, 0, 10, 10), (1.5, 0, 11.5, 10)) == set()
    # Past the dead zone the shrunk offset must still exceed half the raw offset: |dx| > 4 for size 10.
    assert shapes.relative_position((3.5, 0, 13.5, 10), (0, 0, 10, 10)) == set()  # 1.5 / 3.5 < 0.5
    assert shapes.relative_position((4.5, 0, 14.5, 10), (0, 0, 10, 10)) == {"right of"}  # 2.5 / 4.5
    assert shapes.relative_position((0, 20, 10, 30), (0, 0, 10, 10)) == {"below"}


# ----------------------------------------------------------------------------------------------
# The judge, per category, with near misses


def ok(record, codes):
    correct, reason = shapes.judge(record, codes)
    assert correct == (reason == ""), reason  # GenEval: the reason is empty exactly when correct
    return correct


SINGLE = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}
TWO = {"tag": "two_object", "include": [{"class": "circle", "count": 1}, {"class": "square", "count": 1}],
       "prompt": "a photo of a circle and a square"}
COLORS_REC = {"tag": "colors", "include": [{"class": "ring", "count": 1, "color": "blue"}],
              "prompt": "a photo of a blue ring"}
COLOR_ATTR = {"tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "red"},
                                               {"class": "square", "count": 1, "color": "blue"}],
              "prompt": "a photo of a red circle and a blue square"}


def counting(n, name="triangle"):
    return {"tag": "counting", "include": [{"class": name, "count": n}],
            "exclude": [{"class": name, "count": n + 1}], "prompt": f"a photo of {n} {name}s"}


def position(relation, name="square", reference="circle"):
    return {"tag": "position", "include": [{"class": reference, "count": 1},
                                           {"class": name, "count": 1, "position": [relation, 0]}],
            "prompt": f"a photo of a {name} {relation} a {reference}"}


def test_judge_single_object():
    assert ok(SINGLE, scene((2, 1, "circle", "green")))
    assert ok(SINGLE, scene((0, 0, "square", "red"), (2, 1, "circle", "green"), (3, 3, "circle", "red")))
    assert not ok(SINGLE, scene((2, 1, "ring", "green")))  # wrong shape
    assert not ok(SINGLE, shapes.scene_to_codes({}))
    assert shapes.judge(SINGLE, scene((2, 1, "ring", "green")))[1] == "expected circle>=1, found 0"


def test_judge_two_object():
    assert ok(TWO, scene((0, 0, "circle", "red"), (3, 3, "square", "red")))
    assert ok(TWO, scene((0, 0, "circle", "red"), (1, 0, "circle", "blue"), (3, 3, "square", "red"),
                         (2, 2, "cross", "green")))  # extra objects are allowed
    assert not ok(TWO, scene((0, 0, "circle", "red")))  # second object missing
    assert not ok(TWO, scene((0, 0, "circle", "red"), (1, 1, "circle", "blue")))
    assert not ok(TWO, scene((0, 0, "diamond", "red"), (3, 3, "square", "red")))  # wrong shape


@pytest.mark.parametrize("n", [2, 3, 4])
def test_judge_counting_is_exact(n):
    cells = [(0, 0), (1, 2), (2, 1), (3, 3), (0, 3)]
    make = lambda k: [(r, c, "triangle", "orange") for r, c in cells[:k]]
    assert ok(counting(n), scene(*make(n)))
    assert ok(counting(n), scene(*make(n), (2, 2, "circle", "red")))  # other classes do not count
    assert not ok(counting(n), scene(*make(n - 1)))  # n - 1: too few
    assert not ok(counting(n), scene(*make(n + 1)))  # n + 1: caught by the exclude clause
    reason = shapes.judge(counting(n), scene(*make(n + 1)))[1]
    assert reason == f"expected triangle<{n + 1}, found {n + 1}"


def test_judge_colors():
    assert ok(COLORS_REC, scene((1, 1, "ring", "blue")))
    assert not ok(COLORS_REC, scene((1, 1, "ring", "red")))  # wrong color
    assert not ok(COLORS_REC, scene((1, 1, "circle", "blue")))  # right color, wrong shape
    assert ok(COLORS_REC, scene((1, 1, "ring", "blue"), (0, 0, "circle", "red")))
    # GenEval checks only the top-`count` detections; with tied scores, the first in raster order.
    assert ok(COLORS_REC, scene((0, 3, "ring", "blue"), (1, 0, "ring", "red")))
    assert not ok(COLORS_REC, scene((0, 3, "ring", "red"), (1, 0, "ring", "blue")))
    two_blue = {"tag": "colors", "include": [{"class": "ring", "count": 2, "color": "blue"}], "prompt": ""}
    assert ok(two_blue, scene((0, 0, "ring", "blue"), (1, 0, "ring", "blue"), (2, 0, "ring", "red")))
    assert not ok(two_blue, scene((0, 0, "ring", "blue"), (1, 0, "ring", "red"), (2, 0, "ring", "blue")))


def test_judge_color_attr():
    assert ok(COLOR_ATTR, scene((0, 0, "circle", "red"), (2, 3, "square", "blue")))
    assert not ok(COLOR_ATTR, scene((0, 0, "circle", "blue"), (2, 3, "square", "red")))  # swapped colors
    assert not ok(COLOR_ATTR, scene((0, 0, "circle", "red"), (2, 3, "square", "red")))  # one wrong
    assert not ok(COLOR_ATTR, scene((0, 0, "circle", "red"), (2, 3, "diamond", "blue")))  # wrong shape
    reason = shapes.judge(COLOR_ATTR, scene((0, 0, "circle", "blue"), (2, 3, "square", "red")))[1]
    assert reason.splitlines() == ["expected red circle>=1, found 0 red; and 1 blue",  # GenEval's wording
                                   "expected blue square>=1, found 0 blue; and 1 red"]


def test_judge_position():
    left_right = scene((1, 0, "circle", "red"), (1, 2, "square", "blue"))  # square right of circle, same row
    assert ok(position("right of"), left_right)
    assert not ok(position("left of"), left_right)  # wrong side
    assert not ok(position("above"), left_right)  # same row: neither above nor below
    assert not ok(position("below"), left_right)
    top_bottom = scene((3, 1, "circle", "red"), (0, 1, "square", "blue"))  # same column
    assert ok(position("above"), top_bottom)
    assert not ok(position("below"), top_bottom)
    assert not ok(position("left of"), top_bottom) and not ok(position("right of"), top_bottom)
    diagonal = scene((1, 1, "circle", "red"), (2, 2, "square", "blue"))  # diagonal: two relations hold
    assert ok(position("right of"), diagonal) and ok(position("below"), diagonal)
    steep = scene((0, 1, "circle", "red"), (3, 2, "square", "blue"))  # mostly below: "right of" fails
    assert ok(position("below"), steep) and not ok(position("right of"), steep)
    assert not ok(position("right of"), scene((1, 2, "square", "blue")))  # reference missing
    assert not ok(position("right of"), scene((1, 0, "circle", "red")))  # target missing
    reason = shapes.judge(position("left of"), left_right)[1]
    assert reason == "expected square left of target, found right of target"


def test_judge_position_uses_top_detections_and_all_pairs():
    record = {"tag": "position", "prompt": "", "include": [
        {"class": "circle", "count": 2}, {"class": "square", "count": 1, "position": ["right of", 0]}]}
    # the square must be right of BOTH circles
    assert ok(record, scene((0, 0, "circle", "red"), (2, 0, "circle", "red"), (1, 2, "square", "red")))
    assert not ok(record, scene((0, 0, "circle", "red"), (2, 3, "circle", "red"), (1, 2, "square", "red")))
    # a third circle is not in the top-2 (raster order) and is ignored
    assert ok(record, scene((0, 0, "circle", "red"), (1, 0, "circle", "red"), (3, 3, "circle", "red"),
                            (1, 2, "square", "red")))
    # a failed reference group leaves no target
    colored = {"tag": "position", "prompt": "", "include": [
        {"class": "circle", "count": 1, "color": "blue"}, {"class": "square", "count": 1, "position": ["right of", 0]}]}
    codes = scene((1, 0, "circle", "red"), (1, 2, "square", "red"))
    assert shapes.judge(colored, codes)[1].splitlines()[-1] == "no target for square to be right of"


# ----------------------------------------------------------------------------------------------
# Ground truth


def all_records():
    """Every record shape the world can ask for, built here so this test needs no prompts.py."""
    S, C = shapes.SHAPES, shapes.COLORS
    records = [{"tag": "single_object", "include": [{"class": s, "count": 1}], "prompt": s} for s in S]
    for a, b in itertools.permutations(S, 2):
        records.append({"tag": "two_object", "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
                        "prompt": ""})
        for relation in ("left of", "right of", "above", "below"):
            records.append(position(relation, a, b))
    for s, n in itertools.product(S, (2, 3, 4)):
        records.append(counting(n, s))
    for s, c in itertools.product(S, C):
        records.append({"tag": "colors", "include": [{"class": s, "count": 1, "color": c}], "prompt": ""})
    for (a, b), (ca, cb) in zip(itertools.permutations(S, 2), itertools.cycle(itertools.permutations(C, 2))):
        records.append({"tag": "color_attr", "include": [{"class": a, "count": 1, "color": ca},
                                                         {"class": b, "count": 1, "color": cb}], "prompt": ""})
    return records


@pytest.mark.parametrize("distractors", [0, 3])
def test_sample_scene_satisfies_every_record_shape(distractors):
    rng = random.Random(0)
    records = all_records()
    assert len(records) >= 200
    for record in records:
        codes = shapes.sample_scene(record, rng, distractors=distractors)
        assert codes.shape == (NUM_CELLS,) and codes.dtype == torch.long
        assert ok(record, codes), (record, shapes.describe(codes))
        n_objects = int((codes != 0).sum())
        wanted = sum(req["count"] for req in record["include"])
        assert n_objects <= wanted + distractors and (distractors or n_objects == wanted)


def test_sample_scene_is_seeded_and_varied():
    record = position("above")
    a = [shapes.sample_scene(record, random.Random(7)).tolist() for _ in range(2)]
    assert a[0] == a[1]
    rng = random.Random(0)
    layouts = {tuple(shapes.sample_scene(record, rng).tolist()) for _ in range(50)}
    assert len(layouts) > 20  # random cells and colors, not one canned scene


def test_sample_scene_position_unambiguous_by_default():
    rng = random.Random(0)
    for relation in ("left of", "right of", "above", "below"):
        record = position(relation)
        pairs = []
        for unambiguous in (True, False):
            for _ in range(100):
                found = shapes.detect(shapes.sample_scene(record, rng, unambiguous=unambiguous))
                pairs.append((unambiguous, shapes.relative_position(found["square"][0].box, found["circle"][0].box)))
        assert all(rels == {relation} for strict, rels in pairs if strict)
        assert any(len(rels) == 2 for strict, rels in pairs if not strict)  # diagonals do occur otherwise


def test_sample_scene_impossible_record_raises():
    record = counting(GRID * GRID + 1)
    with pytest.raises(ValueError):
        shapes.sample_scene(record, random.Random(0), tries=3)


def test_generated_records():
    records = shapes.make_shape_records(500, seed=0)
    assert len(records) == 500
    assert {r["tag"] for r in records} == set(shapes.TAGS)
    rng = random.Random(0)
    for record in records:
        for req in record["include"] + record.get("exclude", []):
            assert req["class"] in shapes.SHAPES and req.get("color", "red") in shapes.COLORS
        codes = shapes.sample_scene(record, rng)
        assert ok(record, codes), (record["prompt"], shapes.describe(codes))
        assert shapes.answer_for(record) == record["answer"]
    counting_prompt = next(r["prompt"] for r in records if r["tag"] == "counting" and "cross" in r["prompt"])
    assert counting_prompt.endswith("crosses")
    bare = {"tag": "color_attr", "include": [{"class": "ring", "count": 1, "color": "orange"},
                                             {"class": "cross", "count": 1, "color": "blue"}]}
    assert shapes.answer_for(bare) == "The ring is orange and the cross is blue"


# ----------------------------------------------------------------------------------------------
# The split: evaluation prompts are never training prompts, in any category


def keys_and_texts(records):
    return {prompts.prompt_key(r) for r in records}, {prompts.prompt_text(r) for r in records}


def assert_disjoint(training, evaluation):
    """No evaluation prompt is a training prompt (by text or by prompts.prompt_key); every tag is evaluated."""
    train_keys, train_texts = keys_and_texts(training)
    for record in evaluation:
        assert prompts.prompt_key(record) not in train_keys, record["prompt"]
        assert prompts.prompt_text(record) not in train_texts, record["prompt"]
    assert {r["tag"] for r in evaluation} == set(shapes.TAGS)


def assert_everything_trains(training):
    """Every shape, color, count and relation still occurs in training, in the tags that use it."""
    by_tag = {tag: [r for r in training if r["tag"] == tag] for tag in shapes.TAGS}
    for tag in shapes.TAGS:  # single_object holds two shapes out; they train in every other tag
        entries = [e for r in by_tag[tag] for e in r["include"]]
        expected = set(shapes.SHAPES) - set(shapes.HELDOUT_SHAPES) if tag == "single_object" else set(shapes.SHAPES)
        assert {e["class"] for e in entries} == expected, tag
    for tag in ("colors", "color_attr"):
        assert {e["color"] for r in by_tag[tag] for e in r["include"]} == set(shapes.COLORS), tag
    assert {r["include"][0]["count"] for r in by_tag["counting"]} == set(prompts.COUNTS)
    assert {prompts.split_position(r["include"])[1] for r in by_tag["position"]} == set(prompts.RELATIONS)
    for shape in shapes.SHAPES:  # counting: each shape at two of the three counts
        counts = {r["include"][0]["count"] for r in by_tag["counting"] if r["include"][0]["class"] == shape}
        assert len(counts) == len(prompts.COUNTS) - 1, (shape, counts)


def test_train_py_pool_and_evaluation_are_disjoint_in_every_category(tmp_path):
    """The pool train.py builds for the world (with its held-out evaluation on) shares no prompt with that
    evaluation, in all six categories, and still trains every shape, color, count and relation."""
    import train

    cfg = train.parse_config(["--model", "shapes-janus", "--eval-every", "50", "--out", str(tmp_path / "run")])
    train.validate(cfg, 1)
    training, evaluation = train.load_records(cfg)
    assert evaluation and cfg.eval_every > 0
    assert_disjoint(training, evaluation)
    assert_everything_trains(training)
    assert len(training) == cfg.num_prompts
    assert all(r["classes"] == list(shapes.SHAPES) for r in training + evaluation)  # the reward reads them


def test_split_is_a_function_of_the_prompt_not_its_wording():
    """Every wording of one prompt (entry order, inverted relation) lies on one side; each tag holds about a
    third out (single_object: 2 of 6 shapes) and the small tags follow their Latin squares."""
    held = {}
    for tag in shapes.TAGS:
        sides = {}
        for record in shapes.world_records(tag):
            sides.setdefault(prompts.prompt_key(record), set()).add(shapes.split_of(record))
        assert all(len(s) == 1 for s in sides.values()), tag
        held[tag] = sum(s == {"eval"} for s in sides.values()) / len(sides)
    assert held["single_object"] == 2 / 6 and held["counting"] == held["two_object"] == held["colors"] == 1 / 3
    assert 0.25 <= held["position"] <= 0.4 and 0.25 <= held["color_attr"] <= 0.4
    right = {"tag": "position", "prompt": "a photo of a ring right of a cross",
             "include": [{"class": "cross", "count": 1}, {"class": "ring", "count": 1, "position": ["right of", 0]}]}
    left = {"tag": "position", "prompt": "a photo of a cross left of a ring",
            "include": [{"class": "ring", "count": 1}, {"class": "cross", "count": 1, "position": ["left of", 0]}]}
    assert shapes.split_of(right) == shapes.split_of(left)
    with pytest.raises(ValueError, match="not a class of the shapes world"):
        shapes.split_of({"tag": "single_object", "prompt": "a dog", "include": [{"class": "dog", "count": 1}]})


def test_eval_records_repeat_the_few_held_out_prompts():
    """16 per tag from 2 single_object prompts: each prompt 8 times, and never one on the training side."""
    records = shapes.eval_records(16)
    assert [r["tag"] for r in records[:6]] == list(shapes.TAGS) and len(records) == 96
    assert all(shapes.split_of(r) == "eval" for r in records)
    single = collections.Counter(r["prompt"] for r in records if r["tag"] == "single_object")
    assert single == {"a photo of a diamond": 8, "a photo of a cross": 8}
    assert shapes.eval_records(16) == records  # fixed by EVAL_SEED


def test_train_py_applies_an_exclusion_file_in_the_shapes_world(tmp_path):
    """--exclude-prompts FILE also drops training prompts in the world, with its held-out evaluation on."""
    import train

    circle = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}
    prompts.write_records(tmp_path / "drop.jsonl", [circle])
    cfg = train.parse_config(["--model", "shapes-janus", "--num-prompts", "300", "--exclude-prompts",
                              str(tmp_path / "drop.jsonl"), "--out", str(tmp_path / "run")])
    train.validate(cfg, 1)
    training, evaluation = train.load_records(cfg)
    assert cfg.eval_every > 0 and evaluation and shapes.split_of(circle) == "train"
    assert "a photo of a circle" not in {r["prompt"] for r in training}
    assert "a photo of a square" in {r["prompt"] for r in training}
