"""Tests for reward.py: hand-written answers per category (open-r1 style) and group advantages."""
import math
import random

import pytest
import torch

from prompts import GENEVAL_METADATA, OBJECTS, TAGS, add_questions, make_records, plural, read_records
from reward import (SLOTS, SYNONYMS, group_advantages, is_correct, score_answer, score_answers,
                    score_details, zero_variance_fraction)


def record(tag, *entries):
    # a record from (class, count, extra fields) tuples, with its question and answer filled in
    include = [dict({"class": name, "count": count}, **extra) for name, count, extra in entries]
    return add_questions({"tag": tag, "include": include, "prompt": "unused"})


BOWLS = record("counting", ("bowl", 4, {}))
DOG_RIGHT_OF_BEAR = record("position", ("teddy bear", 1, {}),
                           ("dog", 1, {"position": ["right of", 0]}))
GLASS_AND_APPLE = record("color_attr", ("wine glass", 1, {"color": "purple"}),
                         ("apple", 1, {"color": "black"}))


def check(cases, rec):
    for answer, expected in cases:
        assert score_answer(answer, rec) == pytest.approx(expected), answer


def test_single_object():
    check([("bench", 1), ("A Bench.", 1), ("benches", 1), ("a park bench", 1), ("a chair", 0),
           ("", 0), ("benchmark", 0)], record("single_object", ("bench", 1, {})))
    check([("A man", 1), ("three people", 1), ("persons", 1)],
          record("single_object", ("person", 1, {})))


def test_substring_classes_get_no_credit():
    # names are matched longest first, so a class inside a longer name is not named
    check([("a wine glass", 0), ("two glasses", 1)], record("single_object", ("glass", 1, {})))
    check([("a glass", 0), ("wine-glass", 1)], record("single_object", ("wine glass", 1, {})))
    check([("a hot dog", 0), ("a teddy bear", 0)],
          record("two_object", ("dog", 1, {}), ("bear", 1, {})))
    check([("a tv remote", 0), ("a television", 1)], record("single_object", ("tv", 1, {})))
    check([("a pineapple", 0), ("a computer mouse", 0)],
          record("two_object", ("apple", 1, {}), ("mouse", 1, {})))


def test_two_object():
    rec = record("two_object", ("bench", 1, {}), ("sports ball", 1, {}))
    check([("There is a bench and a sports ball", 1), ("a ball on a bench", 1), ("a bench", 0.5),
           ("Sports balls.", 0.5), ("a cat and a dog", 0)], rec)


def test_counting_follows_the_paper_figure():
    check([("Two chairs", 0), ("Three bowls", 0.5), ("Four bowls", 1)], BOWLS)


def test_counting_digits_number_words_and_nearest_number():
    check([("4 bowls", 1), ("There are four.", 0.5), ("4", 0.5), ("four chairs", 0.5),
           ("I see 2 chairs and 4 bowls", 1), ("I see 4 chairs and 2 bowls", 0.5),
           ("a bowl", 0.5), ("bowls", 0.5)], BOWLS)
    check([("three people", 1), ("3 persons", 1), ("two men", 0.5)],
          record("counting", ("person", 3, {})))
    check([("four knives", 1), ("4 knifes", 1)], record("counting", ("knife", 4, {})))


def test_colors():
    rec = record("colors", ("car", 1, {"color": "pink"}))
    check([("pink", 1), ("The car is PINK.", 1), ("pink and white", 0.5), ("red", 0),
           ("It is grey", 0), ("gray and pink", 0.5), ("", 0)], rec)


def test_orange_is_a_fruit_after_a_determiner_and_a_color_elsewhere():
    check([("The orange is red", 1), ("red", 1), ("orange", 0)],
          record("colors", ("orange", 1, {"color": "red"})))
    check([("an orange", 1), ("Oranges", 1), ("an orange cat", 0)],
          record("single_object", ("orange", 1, {})))
    rec = record("color_attr", ("orange", 1, {"color": "red"}), ("apple", 1, {"color": "orange"}))
    check([("a red orange and an orange apple", 1),
           ("The orange is orange and the apple is red", 0.5)], rec)


def test_position_and_synonyms_of_relations():
    check([("The dog is right of the teddy bear", 1),
           ("The dog is to the right of the teddy bear.", 1),
           ("the dog is on the right side of the teddy-bear", 1),
           ("The dog is on the right and the teddy bear is on the left", 1),
           ("The dog is left of the teddy bear", 2 / 3),
           ("The dog is above the teddy bear", 2 / 3),
           ("A dog next to a teddy bear", 2 / 3),
           ("It is right of the teddy bear", 1 / 3),
           ("A hot dog right of a bear", 0)], DOG_RIGHT_OF_BEAR)
    above = record("position", ("bench", 1, {}), ("cat", 1, {"position": ["above", 0]}))
    check([("a cat on top of a bench", 1), ("The cat is over the bench", 1),
           ("The bench is under the cat", 1), ("the bench is beneath the cat", 1),
           ("a cat on a bench", 2 / 3), ("the cat is below the bench", 2 / 3)], above)


def test_position_inverse_phrasing():
    check([("The teddy bear is left of the dog", 1),
           ("The teddy bear is to the right of the dog", 2 / 3),
           ("To the left of the dog is a teddy bear", 1),
           ("On the left is a teddy bear, on the right a dog", 1),
           ("On the left is a dog, on the right a teddy bear", 2 / 3),
           ("A dog and a teddy bear. The dog is on the right.", 1)], DOG_RIGHT_OF_BEAR)


def test_color_attr_binding_and_swapped_colors():
    check([("The wine glass is purple and the apple is black", 1),
           ("a purple wine glass and a black apple", 1),
           ("A black apple beside a purple wine glass", 1),
           ("The wine glass is black and the apple is purple", 0.5),
           ("a black wine glass and a purple apple", 0.5),
           ("The wine glass is purple and white, and the apple is black", 7 / 8),
           ("a purple glass and a black apple", 0.5),
           ("purple and black", 0)], GLASS_AND_APPLE)


def test_details_slots_and_batch_api():
    details = score_details("Three bowls", BOWLS)
    assert tuple(details) == SLOTS["counting"] and details == {"object": 1.0, "count": 0.0}
    assert score_answers(["Four bowls", "Two chairs"], [BOWLS, BOWLS]) == [1.0, 0.0]
    assert is_correct("4 bowls!", BOWLS) and not is_correct("Three bowls", BOWLS)
    assert score_answer(None, BOWLS) == 0.0
    with pytest.raises(ValueError):
        score_answers(["one"], [])
    with pytest.raises(ValueError):
        score_answer("x", {"tag": "shapes", "include": []})


def test_every_ground_truth_answer_scores_one():
    records = make_records(300, seed=7)
    assert {r["tag"] for r in records} == set(TAGS)
    scores = score_answers([r["answer"] for r in records], records)
    assert all(s == 1.0 for s in scores), [r["answer"] for r, s in zip(records, scores) if s != 1]


def test_geneval_answers_and_their_released_plurals_score_one():
    records = read_records(GENEVAL_METADATA)  # shipped in data/
    assert all(is_correct(r["answer"], r) for r in records)
    # the released QA file answers with GenEval's own plurals; they must score too
    counting = [r for r in records if r["tag"] == "counting"]
    assert all(is_correct(r["prompt"].removeprefix("a photo of "), r) for r in counting)


def test_scores_stay_in_unit_interval_for_word_salad():
    rng = random.Random(0)
    words = list(OBJECTS[:40]) + ["red", "orange", "gray", "left", "of", "above", "the", "is", "4"]
    for rec in make_records(60, seed=3):
        for _ in range(20):
            answer = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
            assert 0.0 <= score_answer(answer, rec) <= 1.0, answer


def test_surface_forms_of_different_classes_never_collide():
    owner = {}
    for name in OBJECTS:
        for alias in (name,) + SYNONYMS.get(name, ()):
            for form in (alias, plural(alias), alias + "s"):
                assert owner.setdefault(form, name) == name, form


def test_group_advantages_match_hand_computed_values():
    advantages = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    third = 1 / math.sqrt(3)
    expected = torch.tensor([[math.sqrt(3), -third, -third, -third]])
    assert torch.allclose(advantages, expected, atol=1e-5)


def test_zero_variance_groups_give_exactly_zero():
    rewards = torch.tensor([[0.1, 0.1, 0.1], [0.0, 0.5, 1.0], [1.0, 1.0, 1.0]])
    advantages = group_advantages(rewards)
    assert torch.equal(advantages[0], torch.zeros(3)) and torch.equal(advantages[2], torch.zeros(3))
    assert torch.allclose(advantages[1], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4)
    assert zero_variance_fraction(rewards) == pytest.approx(2 / 3)
    single = group_advantages(torch.tensor([[0.7], [0.2]]))  # G = 1
    assert torch.equal(single, torch.zeros(2, 1)) and zero_variance_fraction(torch.ones(2, 1)) == 1


def test_rows_are_normalised_independently_and_never_nan():
    rewards = torch.rand(5, 8, generator=torch.Generator().manual_seed(0))
    rewards[2] = 0.5
    advantages = group_advantages(rewards)
    for row in range(5):
        assert torch.equal(advantages[row], group_advantages(rewards[row:row + 1])[0])
    assert not advantages.isnan().any()
    assert torch.allclose(advantages.mean(dim=1), torch.zeros(5), atol=1e-6)
    assert group_advantages(torch.tensor([[1, 0]])).dtype == torch.float32  # int rewards accepted
    with pytest.raises(ValueError):
        group_advantages(torch.ones(3))
