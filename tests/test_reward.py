"""Tests for reward.py: hand-written answers per category (open-r1 style) and group advantages."""
import math
import random

import pytest
import torch

from prompts import (COLORS, GENEVAL_METADATA, OBJECTS, RELATIONS, TAGS, add_questions, make_records, plural,
                     read_records)
from reward import (SLOTS, SYNONYMS, agreement, credited, group_advantages, image_baseline_advantages,
                    is_correct, kept_group_advantages, reads_as_prompt,
                    score_answer, score_answers, score_details, zero_variance_fraction)


def record(tag, *entries):
    # a record from (class, count, extra fields) tuples, with its question and answer filled in
    include = [dict({"class": name, "count": count}, **extra) for name, count, extra in entries]
    return add_questions({"tag": tag, "include": include, "prompt": "unused"})


BOWLS = record("counting", ("bowl", 4, {}))
DOG_RIGHT_OF_BEAR = record("position", ("teddy bear", 1, {}),
                           ("dog", 1, {"position": ["right of", 0]}))
GLASS_AND_APPLE = record("color_attr", ("wine glass", 1, {"color": "purple"}),
                         ("apple", 1, {"color": "black"}))
BENCH = record("single_object", ("bench", 1, {}))
BENCH_AND_BALL = record("two_object", ("bench", 1, {}), ("sports ball", 1, {}))
PINK_CAR = record("colors", ("car", 1, {"color": "pink"}))
EVERY_OBJECT = " ".join(OBJECTS)


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


def test_counting_digits_number_words_and_the_object_a_count_belongs_to():
    # "I see 2 chairs and 4 bowls" names a class the question did not ask about: its object slot
    # shares 1/2 (else listing every class would be free); the 2 is the chairs', the 4 the bowls'
    check([("4 bowls", 1), ("There are four.", 0.5), ("4", 0.5), ("four chairs", 0.5),
           ("I see 2 chairs and 4 bowls", 0.75), ("I see 4 chairs and 2 bowls", 0.25),
           ("4 red bowls", 1), ("four small bowls", 1), ("the bowls are four", 1),
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


# Answers a policy finds when it optimises the reward: listing objects, negating, hedging, stating both
# relations, extra counts, extra colors, repeating. Each earns less than the plain answer (record["answer"]).
ADVERSARIAL = [
    (BENCH, EVERY_OBJECT, 1 / 159),  # 159 classes: "orange broccoli" is a broccoli, colored orange
    (BENCH, "a bench and a chair", 1 / 2),
    (BENCH, "either a bench or a chair", 1 / 2),
    (BENCH, "no bench", 0),
    (BENCH, "There is a bench but no cat", 1 / 2),
    (BENCH_AND_BALL, EVERY_OBJECT, 2 / 159),
    (BENCH_AND_BALL, "There is no bench and no sports ball", 0),
    (BENCH_AND_BALL, "neither a bench nor a sports ball", 0),
    (BENCH_AND_BALL, "There isn't a bench and there isn't a sports ball", 0),
    (BENCH_AND_BALL, "a bench without a sports ball", 1 / 2),
    (BENCH_AND_BALL, "a bench, a sports ball and a cat", 2 / 3),
    (BOWLS, "there are not four bowls", 0),
    (BOWLS, "there aren't four bowls", 0),
    (BOWLS, "three or four bowls", 3 / 4),
    (BOWLS, "3-4 bowls", 3 / 4),
    (BOWLS, "one two three four bowls", 5 / 8),
    (BOWLS, "four or more bowls", 3 / 4),
    (BOWLS, "at least four bowls", 3 / 4),
    (BOWLS, "about four bowls", 3 / 4),
    (BOWLS, "several bowls", 1 / 2),
    (BOWLS, "not three but four bowls", 3 / 4),
    (BOWLS, "four bowls, four bowls", 3 / 4),
    (BOWLS, "4 bowls, four bowls", 3 / 4),
    (BOWLS, "four bowls four bowls three bowls", 2 / 3),
    (BOWLS, "four bowls, " + EVERY_OBJECT, (1 / 159 + 1) / 2),
    (PINK_CAR, "pink or white", 1 / 2),
    (PINK_CAR, " ".join(COLORS), 1 / 10),
    (PINK_CAR, "pink, pink", 1 / 2),
    (PINK_CAR, "the car is pink, not red", 1 / 2),
    (PINK_CAR, "the car is not pink", 0),
    (DOG_RIGHT_OF_BEAR, "the dog is right of the teddy bear and the dog is left of the teddy bear", 5 / 6),
    (DOG_RIGHT_OF_BEAR, "the dog is left or right of the teddy bear", 5 / 6),
    (DOG_RIGHT_OF_BEAR, "The dog is right of the teddy bear or left", 5 / 6),
    (DOG_RIGHT_OF_BEAR, "The dog is right of and above the teddy bear", 5 / 6),
    (DOG_RIGHT_OF_BEAR, "The dog is right of the teddy bear, not left of it", 5 / 6),
    (DOG_RIGHT_OF_BEAR, "The dog is not right of the teddy bear", 2 / 3),
    (DOG_RIGHT_OF_BEAR, "The dog is right of the teddy bear. The dog is right of the teddy bear.", 5 / 6),
    (DOG_RIGHT_OF_BEAR, "dog teddy bear left right above below", 3 / 4),
    (DOG_RIGHT_OF_BEAR, "The dog is right of the teddy bear and the cat", 7 / 9),
    (GLASS_AND_APPLE, "The wine glass is purple or black and the apple is black or purple", 3 / 4),
    (GLASS_AND_APPLE, "The wine glass is purple, not black, and the apple is black, not purple", 3 / 4),
    (GLASS_AND_APPLE, "a purple purple wine glass and a black apple", 7 / 8),
    (GLASS_AND_APPLE, f"The wine glass is {' '.join(COLORS)} and the apple is {' '.join(COLORS)}", 11 / 20),
    (GLASS_AND_APPLE, "The wine glass is purple and the apple is black and the cup is red", 5 / 6),
]


@pytest.mark.parametrize("rec, answer, expected", ADVERSARIAL, ids=[a[:50] for _, a, _ in ADVERSARIAL])
def test_gaming_answers_earn_less_than_the_plain_answer(rec, answer, expected):
    assert score_answer(rec["answer"], rec) == 1.0
    assert score_answer(answer, rec) == pytest.approx(expected)
    assert score_answer(answer, rec) < 1.0


def test_a_hedge_earns_the_mean_of_its_members_whatever_the_truth():
    # so for any belief a hedge is worth the average of its members' chances, never more than the best one
    cases = [
        ([record("counting", ("bowl", n, {})) for n in (2, 3, 4, 5)],
         ["two bowls", "three bowls", "four bowls"], "two, three or four bowls"),
        ([record("colors", ("car", 1, {"color": c})) for c in COLORS],
         ["the car is red", "the car is blue"], "the car is red or blue"),
        ([record("position", ("teddy bear", 1, {}), ("dog", 1, {"position": [r, 0]})) for r in RELATIONS],
         ["the dog is left of the teddy bear", "the dog is above the teddy bear"],
         "the dog is left of the teddy bear or above it"),
        ([record("single_object", (name, 1, {})) for name in ("bench", "chair", "cat")],
         ["a bench", "a chair"], "a bench or a chair"),
    ]
    for truths, members, hedge in cases:
        for rec in truths:
            mean = sum(score_answer(member, rec) for member in members) / len(members)
            assert score_answer(hedge, rec) == pytest.approx(mean), (hedge, rec["prompt"])


def test_negation_reaches_to_the_end_of_its_phrase():
    # it denies what follows it up to the first object name or relation word, within its clause
    check([("The dog is not left of the teddy bear", 2 / 3),  # the teddy bear itself is not denied
           ("The dog isn't on the right of the teddy bear", 2 / 3)], DOG_RIGHT_OF_BEAR)
    check([("There is a bench and no sports ball", 1 / 2), ("There is no bench, a sports ball", 1 / 2),
           ("no bench or sports ball", 1 / 2)], BENCH_AND_BALL)
    check([("The car isn't red, it is pink", 1 / 2), ("The car isnt pink", 0), ("no pink car", 0)], PINK_CAR)
    check([("There are four bowls, not three", 3 / 4), ("There are no bowls", 0)], BOWLS)
    check([("The wine glass is not purple and the apple is black", 3 / 4)], GLASS_AND_APPLE)


def test_colors_of_a_run_and_orange_read_in_context():
    check([("a purple and white wine glass and a black apple", 7 / 8)], GLASS_AND_APPLE)
    check([("a red orange", 1)], record("colors", ("orange", 1, {"color": "red"})))  # the fruit
    check([("red orange yellow", 1 / 3)], record("colors", ("car", 1, {"color": "orange"})))  # 3 colors
    # a color word after "is" is a color, not a third object that would share the object slots
    check([("The zebra is pink and the jar is orange", 1)],
          record("color_attr", ("zebra", 1, {"color": "pink"}), ("jar", 1, {"color": "orange"})))


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


def test_reads_as_prompt_needs_most_votes_fully_right():
    """--answer-reward gated: an image is kept when more than half of its votes earn the prompt's full reward."""
    votes = [["4 bowls.", "four bowls", "3 bowls"], ["4 bowls", "3 bowls", "a cup"], ["four bowls"] * 2 + ["2 bowls"] * 2]
    assert reads_as_prompt(votes, [BOWLS] * 3) == [True, False, False]
    with pytest.raises(ValueError, match="3 vote lists for 2 records"):
        reads_as_prompt(votes, [BOWLS] * 2)


def test_kept_group_advantages_use_only_the_kept_scores():
    """--answer-reward judged: the kept entries alone make each group's mean and std; the rest get exactly 0, and a
    group with fewer than two different kept scores gives 0."""
    rewards = torch.tensor([[1.0, 0.0, 0.5, 1.0], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 1.0, 0.0]])
    keep = torch.tensor([[True, True, False, False], [True, False, False, False], [True, True, False, True]])
    advantages = kept_group_advantages(rewards, keep)
    assert torch.allclose(advantages[0], torch.tensor([1.0, -1.0, 0.0, 0.0]), atol=1e-5)
    assert torch.equal(advantages[1], torch.zeros(4))
    assert torch.allclose(advantages[2], torch.tensor([1 / math.sqrt(2), 1 / math.sqrt(2), 0.0, -math.sqrt(2)]),
                          atol=1e-5)
    assert torch.equal(kept_group_advantages(rewards, torch.ones(3, 4, dtype=torch.bool)), group_advantages(rewards))
    with pytest.raises(ValueError, match="keep must be a bool tensor"):
        kept_group_advantages(rewards, keep.float())


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


def test_a_world_with_its_own_classes_prices_naming_them():
    """The shapes world's records carry their class list: listing every shape, or denying one the prompt
    never asked about, earns less than the plain answer, as the 160 objects do for GenEval's prompts."""
    import shapes

    record = next(r for r in shapes.make_shape_records(60, seed=0) if r["tag"] == "single_object")
    shape = record["include"][0]["class"]
    other = next(s for s in shapes.SHAPES if s != shape)
    plain = score_answer(f"a {shape}", record)
    assert plain == 1.0
    assert score_answer(" ".join(shapes.SHAPES), record) < plain
    assert score_answer(f"a {shape} and a {other}", record) < plain


def test_agreement_counts_the_votes_that_say_the_same_words():
    """--answer-reward agreement: the share of an image's other answers with the same words; case, punctuation
    and spacing aside, and the prompt's truth plays no part."""
    answers = ["Three circles.", "red", "left"]
    votes = [["three  circles", "four circles", "THREE CIRCLES!"], ["blue", "blue", "blue"], ["left", "left", "left"]]
    assert agreement(answers, votes) == [2 / 3, 0.0, 1.0]
    with pytest.raises(ValueError, match="vote lists"):
        agreement(answers, votes[:2])


def test_image_baseline_subtracts_the_mean_of_the_images_own_votes():
    """--answer-reward image-baseline: each answer's reward less the mean of its own image's votes, over the std of
    the whole group's answers and votes; an image whose answers all score alike, or a uniform group, gives exactly 0."""
    rewards = torch.tensor([[1.0, 2 / 3, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    votes = torch.tensor([[[1.0, 0.0], [2 / 3, 2 / 3], [0.0, 0.0], [1.0, 1.0]], [[1.0, 1.0]] * 4])  # (P=2, G=4, K=2)
    advantages = image_baseline_advantages(rewards, votes)
    std = torch.cat([rewards[0], votes[0].flatten()]).std(correction=0)
    want = torch.tensor([0.5, 0.0, 1.0, 0.0]) / std
    assert torch.allclose(advantages[0], want, atol=1e-6), advantages
    # the failed image read as it is (2/3, like its votes) is not pushed down for the image's failure, as UniRL's
    # shared advantage pushes it: (2/3 - mean) / std < 0 there
    assert advantages[0, 1] == 0 and group_advantages(rewards)[0, 1] < 0
    assert advantages[0, 3] == 0 and torch.equal(advantages[1], torch.zeros(4))
    thirds = torch.full((1, 2, 8), 1 / 3)  # eight thirds average to a float a hair off 1/3: still exactly 0
    assert torch.equal(image_baseline_advantages(torch.tensor([[1 / 3, 1.0]]), thirds)[0, 0], torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"votes \(P, G, K\)"):
        image_baseline_advantages(rewards, votes[0])


def test_credited_pays_all_or_nothing_under_the_judges_rule():
    assert credited([1.0, 0.5, 0.0], "partial") == [1.0, 0.5, 0.0]
    assert credited([1.0, 0.5, 0.0], "all") == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="choose partial or all"):
        credited([1.0], "some")
