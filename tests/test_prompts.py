"""Tests for prompts.py: GenEval's conventions, determinism, and the jsonl round trip."""
import collections
import json
import random

import pytest

import prompts
from prompts import (COCO_CLASSES, OBJECTS, TAGS, add_questions, exclude_records, make_prompt,
                     make_record, make_records, number_word, plural, read_records, write_records)

GENEVAL = prompts.GENEVAL_METADATA  # shipped in data/


def test_records_are_deterministic_per_seed_and_differ_across_seeds():
    assert make_records(60, seed=1) == make_records(60, seed=1)
    assert make_records(60, seed=1) != make_records(60, seed=2)


def test_tags_cycle_so_categories_are_balanced():
    counts = collections.Counter(r["tag"] for r in make_records(600, seed=0))
    assert counts == {tag: 100 for tag in TAGS}
    assert [r["tag"] for r in make_records(7, tags=("colors", "position"))][:3] == \
        ["colors", "position", "colors"]


def test_prompts_are_deduplicated_within_a_call():
    prompts_drawn = [r["prompt"] for r in make_records(600, seed=0)]
    assert len(set(prompts_drawn)) == len(prompts_drawn)


def test_record_shapes_follow_geneval():
    rng = random.Random(0)
    counting = make_record("counting", rng)
    (entry,), (excluded,) = counting["include"], counting["exclude"]
    assert excluded == {"class": entry["class"], "count": entry["count"] + 1}
    words = f"{number_word(entry['count'])} {plural(entry['class'])}"
    assert counting["prompt"] == f"a photo of {words}"
    position = make_record("position", rng)
    ref, obj = position["include"]
    assert obj["position"][1] == 0 and "position" not in ref
    assert position["prompt"].split(obj["position"][0])[1].strip().endswith(ref["class"])
    for _ in range(50):
        first, second = make_record("color_attr", rng)["include"]
        assert first["class"] != second["class"] and first["color"] != second["color"]


def test_articles_and_answers():
    include = [{"class": "toaster", "count": 1}, {"class": "oven", "count": 1}]
    assert make_prompt("two_object", include) == "a photo of a toaster and an oven"
    assert add_questions({"tag": "two_object", "include": include, "prompt": "x"})["answer"] == \
        "There is a toaster and an oven"
    colored = [{"class": "wine glass", "count": 1, "color": "purple"},
               {"class": "apple", "count": 1, "color": "black"}]
    record = add_questions({"tag": "color_attr", "include": colored, "prompt": "x"})
    assert record["answer"] == "The wine glass is purple and the apple is black"
    assert record["question"] == prompts.QUESTIONS["color_attr"]
    # answers already present are left alone
    assert add_questions(dict(record, answer="kept"))["answer"] == "kept"


def test_round_trip_through_jsonl(tmp_path):
    records = make_records(120, seed=5)
    path = tmp_path / "train.jsonl"
    write_records(path, records)
    assert read_records(path) == records
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]  # no temp file left behind


def test_bad_lines_name_the_file_line_and_problem(tmp_path):
    good = json.dumps(make_records(1)[0])
    cases = {
        "{not json": "invalid JSON",
        json.dumps({"tag": "colors", "include": []}): "missing field 'prompt'",
        json.dumps({"tag": "shapes", "include": [], "prompt": "p"}): "unknown tag",
        json.dumps({"tag": "counting", "include": [{"class": "cat", "count": 0}], "prompt": "p"}):
            "'count' must be an integer >= 1",
        json.dumps({"tag": "colors", "include": [{"class": "cat", "count": 1}], "prompt": "p"}):
            "needs a non-empty 'color'",
        json.dumps({"tag": "two_object", "include": [3, 4], "prompt": "p"}): "bad include entry 3",
        json.dumps({"tag": "position", "prompt": "p", "include": [
            {"class": "cat", "count": 1}, {"class": "dog", "count": 1}]}): "exactly one entry",
        json.dumps({"tag": "position", "prompt": "p", "include": [
            {"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["near", 0]}]}):
            "unknown relation 'near'",
    }
    for bad, problem in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(f"{good}\n\n{bad}\n")
        with pytest.raises(ValueError) as error:
            read_records(path)
        assert str(path) in str(error.value) and "line 3" in str(error.value)
        assert problem in str(error.value)


def one(name, prompt, tag="single_object", **fields):
    """A hand-made record of one object."""
    return {"tag": tag, "include": [{"class": name, "count": 1, **fields}], "prompt": prompt}


def pair(first, second, prompt, tag="two_object", relation=None):
    """A hand-made record of two objects; with a relation, `second` is REL `first` (GenEval's layout)."""
    include = [{"class": first, "count": 1}, {"class": second, "count": 1}]
    if relation:
        include[1]["position"] = [relation, 0]
    return {"tag": tag, "include": include, "prompt": prompt}


def counting(name, n, prompt):
    return {"tag": "counting", "include": [{"class": name, "count": n}],
            "exclude": [{"class": name, "count": n + 1}], "prompt": prompt}


def test_exclusion_counts_normalised_overlap():
    train = [one("cat", "a photo of a cat"), one("dog", "A  photo of a DOG "), one("x", "x")]
    kept, excluded = exclude_records(train, [one("dog", "a photo of a dog"), one("cow", "a cat")])
    assert excluded == 1 and [r["prompt"] for r in kept] == ["a photo of a cat", "x"]


def test_exclusion_compares_what_a_prompt_asks_for_not_its_wording():
    # GenEval's spellings on the left, ours (or a reordering) on the right: each pair is one prompt
    same = [(counting("bench", 3, "a photo of three benchs"), counting("bench", 3, "a photo of three benches")),
            (counting("person", 3, "a photo of three persons"), counting("person", 3, "a photo of three people")),
            (pair("knife", "stop sign", "a photo of a knife and a stop sign"),
             pair("stop sign", "knife", "a photo of a stop sign and a knife")),
            (pair("cat", "dog", "a photo of a dog right of a cat", "position", "right of"),
             pair("dog", "cat", "a photo of a cat left of a dog", "position", "left of")),
            (counting("people", 2, "hand-made: class written as a plural"), counting("person", 2, "two people")),
            (counting("benchs", 2, "hand-made: GenEval's plural"), counting("bench", 2, "two benches"))]
    for evaluation, training in same:
        assert prompts.prompt_key(evaluation) == prompts.prompt_key(training)
        assert exclude_records([training], [evaluation]) == ([], 1), training["prompt"]
    # and what differs in content stays: the relation's direction, a count, a color, the tag
    differ = [(pair("cat", "dog", "a photo of a dog right of a cat", "position", "right of"),
               pair("cat", "dog", "a photo of a dog left of a cat", "position", "left of")),
              (counting("bench", 3, "a photo of three benchs"), counting("bench", 2, "a photo of two benches")),
              (one("car", "a photo of a red car", "colors", color="red"),
               one("car", "a photo of a blue car", "colors", color="blue")),
              (pair("cat", "dog", "a photo of a cat and a dog"),
               pair("cat", "dog", "a photo of a cat above a dog", "position", "above"))]
    for evaluation, training in differ:
        assert exclude_records([training], [evaluation]) == ([training], 0), training["prompt"]


def test_held_out_prompts_never_train_even_when_the_pool_repeats_them():
    cat, dog, cow = one("cat", "a photo of a cat"), one("dog", "a photo of a dog"), one("cow", "a photo of a cow")
    cats = counting("cat", 2, "a photo of two cats")
    pool = [cat, dog, cats, cow, counting("cat", 2, "a photo of two cats "), cat]  # the tail repeats itself
    training, held_out = prompts.hold_out(pool, 2)
    assert held_out == pool[-2:]  # the last two distinct prompts, in pool order
    assert training == [dog, cow]  # every repeat of them (same prompt_key) left training, wherever it was
    keys = {prompts.prompt_key(r) for r in held_out}
    assert not keys & {prompts.prompt_key(r) for r in training}


def test_plural_of_hard_cases():
    expected = {"person": "people", "computer mouse": "computer mice", "knife": "knives",
                "sheep": "sheep", "skis": "skis", "scissors": "scissors", "glass": "glasses",
                "bus": "buses", "hair drier": "hair driers", "wine glass": "wine glasses",
                "bench": "benches", "strawberry": "strawberries", "key": "keys", "box": "boxes",
                "tomato": "tomatoes", "leaf": "leaves", "tv": "tvs", "broccoli": "broccolis"}
    assert {name: plural(name) for name in expected} == expected
    assert [number_word(n) for n in (0, 4, 10)] == ["zero", "four", "ten"]
    with pytest.raises(ValueError):
        number_word(11)


def test_vocabulary_sizes():
    assert len(OBJECTS) == 160 and len(set(OBJECTS)) == 160
    assert len(COCO_CLASSES) == 80 and not set(prompts.EXTRA_OBJECTS) & set(COCO_CLASSES)
    assert prompts.COLORS == ("red", "orange", "yellow", "green", "blue", "purple", "pink",
                              "brown", "black", "white")
    assert len({plural(name) for name in OBJECTS}) == 160


def test_geneval_file_reads_and_gets_questions():
    records = read_records(GENEVAL)
    assert len(records) == 553
    assert {e["class"] for r in records for e in r["include"]} == set(COCO_CLASSES)
    by_prompt = {r["prompt"]: r for r in records}
    assert by_prompt["a photo of four handbags"]["answer"] == "four handbags"
    assert by_prompt["a photo of a dog right of a teddy bear"]["answer"] == \
        "The dog is right of the teddy bear"
    assert by_prompt["a photo of a pink car"]["answer"] == "pink"


def test_make_prompt_reproduces_geneval_except_its_naive_plurals():
    # GenEval writes "benchs", "persons", "sheeps"; we write real plurals; the rest is identical
    differing = {r["include"][0]["class"] for r in read_records(GENEVAL)
                 if make_prompt(r["tag"], r["include"]) != r["prompt"]}
    assert differing == {"bench", "person", "sheep", "knife", "sandwich", "toothbrush"}


def test_cli_writes_and_excludes(tmp_path, capsys):
    out = tmp_path / "train.jsonl"
    prompts.main(["--n", "120", "--seed", "0", "--out", str(out), "--exclude", str(GENEVAL)])
    printed = capsys.readouterr().out
    kept = read_records(out)
    assert f"excluded {120 - len(kept)} " in printed and "single_object" in printed
    assert not {r["prompt"] for r in kept} & {r["prompt"] for r in read_records(GENEVAL)}
