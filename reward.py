"""The UniRL reward: score the model's answers about its own images, then normalise per group.

In a UniRL iteration the model draws G images for a prompt, answers the record's question about
each one, and this file turns each free-form answer into a reward in [0, 1] by plain keyword
matching against the record's `include` (no judge model: UniRL's figure grades "two chairs" /
"three bowls" / "four bowls" against "four bowls" as 0 / 1 / 2 points, i.e. one point per fact).
The reward is the fraction of a category's slots that the answer gets right:

    single_object  object                          1 if the class is named
    two_object     first_object, second_object     1/2 per class named
    counting       object, count                   "two chairs" 0, "three bowls" 1/2, "four bowls" 1
    colors         color                           1/k when the right color is among k colors named
    position       object, reference, relation     relation read in either direction
    color_attr     first_object, second_object, first_color, second_color

How an answer is read (all deliberate, all unit-tested):
  * words: lower case; a non-alphanumeric character separates words ("Teddy-bear!" = "teddy bear").
  * objects: whole words, singular or plural (also GenEval's "benchs"), plus a few synonyms (sofa,
    television, man...). Names are matched longest first over the whole 160-object vocabulary, so a
    class inside a longer name gets no credit: "wine glass" is never "glass", "hot dog" never "dog".
  * numbers: digits or number words zero..ten; "a"/"an" are not counts. With several numbers, the
    one nearest the expected object counts (ties: the one before it), else the first.
  * colors: GenEval's ten plus other color words (gray, gold...) that count as wrong colors.
    "orange" is the fruit after a determiner ("an orange", "the orange is red") and the color
    elsewhere; as an adjective ("an orange cat") it is never the fruit.
  * a color belongs to the object right after it ("a purple wine glass"), else to the nearest object
    before it ("the wine glass is purple"). Two colors on one object share the credit (1/2 each).
  * relations: left/right, above (also over, atop, "on top of"), below (under, beneath, underneath,
    bottom). Bare "on" is not a relation: it is contact, not a side. The first relation word
    decides; its subject is the nearest object before it and its landmark the first object after
    it, so "the teddy bear is to the left of the dog" proves "dog right of teddy bear".
Known gaps: negation ("no dogs") and hedging ("three or four bowls") are not penalised.

`group_advantages` then normalises the (P, G) rewards within each prompt's group (GRPO).
"""
import functools
import re
from collections import namedtuple

import torch

from prompts import COLORS, NUMBER_WORDS, OBJECTS, plural, split_position

SLOTS = {
    "single_object": ("object",),
    "two_object": ("first_object", "second_object"),
    "counting": ("object", "count"),
    "colors": ("color",),
    "position": ("object", "reference", "relation"),
    "color_attr": ("first_object", "second_object", "first_color", "second_color"),
}
# other names a model may use for a class; they score as that class
SYNONYMS = {
    "person": ("man", "woman", "boy", "girl", "child"), "couch": ("sofa",), "tv": ("television",),
    "donut": ("doughnut",), "hair drier": ("hair dryer", "hairdryer"), "motorcycle": ("motorbike",),
    "cell phone": ("cellphone", "mobile phone", "smartphone"), "airplane": ("aeroplane", "plane"),
    "tv remote": ("remote control", "remote"), "sports ball": ("ball", "soccer ball", "football"),
}
# color word -> the color it names; non-GenEval colors are kept so that they count as wrong
COLOR_WORDS = {c: c for c in COLORS} | {
    "gray": "gray", "grey": "gray", "silver": "silver", "gold": "gold", "golden": "gold",
    "beige": "beige", "violet": "violet", "cyan": "cyan", "magenta": "magenta", "navy": "navy",
    "turquoise": "turquoise", "maroon": "maroon"}
RELATION_WORDS = {"left": "left of", "right": "right of", "above": "above", "over": "above",
                  "atop": "above", "top": "above", "below": "below", "under": "below",
                  "underneath": "below", "beneath": "below", "bottom": "below"}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
NUMBERS = {word: n for n, word in enumerate(NUMBER_WORDS)}
DETERMINERS = {"a", "an", "the", "this", "that", "one", "another", "each", "every"}

Mention = namedtuple("Mention", "name start end")  # a class or color found at words[start:end]


@functools.lru_cache(maxsize=64)
def vocabulary(classes: tuple) -> tuple:
    # surface form (tuple of words) -> class, for the singular, the plural and the naive "+s"
    forms = {}
    for name in classes:
        for alias in (name,) + SYNONYMS.get(name, ()):
            for form in (alias, plural(alias), alias + "s"):
                forms.setdefault(tuple(form.split()), name)
    return forms, max(len(form) for form in forms)


def find_objects(words: list, classes: tuple) -> list:
    # left to right, longest name first: "wine glass" is consumed before "glass" could match
    forms, longest = vocabulary(classes)
    mentions, i = [], 0
    while i < len(words):
        for size in range(min(longest, len(words) - i), 0, -1):
            name = forms.get(tuple(words[i:i + size]))
            if name:
                mentions.append(Mention(name, i, i + size))
                i += size
                break
        else:
            i += 1  # this word starts no name
    # a color-named class right before another object is an adjective: "an orange cat"
    starts = {m.start for m in mentions}
    return [m for m in mentions
            if not (m.end - m.start == 1 and words[m.start] in COLOR_WORDS and m.end in starts)]


def find_colors(words: list, objects: list) -> list:
    # every color word, except inside a longer object name or as a noun after a determiner
    covered = {i: m for m in objects for i in range(m.start, m.end)}
    colors = []
    for i, word in enumerate(words):
        mention = covered.get(i)
        in_longer_name = mention is not None and mention.end - mention.start > 1
        is_fruit = mention is not None and i > 0 and words[i - 1] in DETERMINERS  # "an orange"
        if word in COLOR_WORDS and not in_longer_name and not is_fruit:
            colors.append(Mention(COLOR_WORDS[word], i, i + 1))  # "grey" is said as "gray"
    return colors


def stated_count(words: list, objects: list, name: str):
    # the number nearest the first mention of `name` (ties: the one before it), else the first
    numbers = [(i, int(w) if w.isdigit() else NUMBERS[w]) for i, w in enumerate(words)
               if w.isdigit() or w in NUMBERS]
    if not numbers:
        return None
    anchors = [m.start for m in objects if m.name == name]
    if not anchors:
        return numbers[0][1]  # "There are four." still states a count
    return min(numbers, key=lambda n: (abs(n[0] - anchors[0]), n[0] > anchors[0]))[1]


def find_relation(words: list, objects: list):
    # (relation said, subject, landmark) from the first relation word, or None if there is none
    covered = {i for m in objects for i in range(m.start, m.end)}
    for i, word in enumerate(words):
        if word not in RELATION_WORDS or i in covered:
            continue
        before = [m.name for m in objects if m.end <= i]
        after = [m.name for m in objects if m.start > i]
        if before:  # "the dog is right of the bear", "the dog is on the right": subject first
            subject = before[-1]
            others = [n for n in before if n != subject]  # "the dog is on the right" -> the other
            landmark = after[0] if after else (others[-1] if others else None)
        elif len(after) < 2:
            subject = landmark = None
        elif word in ("left", "right") and "of" not in words[i + 1:i + 3]:
            subject, landmark = after[0], after[1]  # "on the left is a dog, then a bear"
        else:
            subject, landmark = after[1], after[0]  # "to the left of the dog is a bear"
        return RELATION_WORDS[word], subject, landmark
    return None


def relation_holds(words: list, objects: list, obj: str, relation: str, ref: str) -> bool:
    # "obj REL ref" is proved by saying it, or by saying "ref INVERSE(REL) obj"
    found = find_relation(words, objects)
    if found is None:
        return False
    said, subject, landmark = found
    if (subject, landmark) == (obj, ref):  # "the dog is right of the bear"
        return said == relation
    return (subject, landmark) == (ref, obj) and said == INVERSE[relation]  # "bear left of dog"


def bind_colors(colors: list, objects: list) -> dict:
    # class -> colors said of it: the object right after the color, else the nearest one before
    starts = {m.start: m for m in objects}
    bound = {}
    for color in colors:
        target = starts.get(color.end)  # adjective: "a purple wine glass"
        if target is None:  # predicate: "the wine glass is purple"
            target = next((m for m in reversed(objects) if m.end <= color.start), None)
        if target:
            bound.setdefault(target.name, set()).add(color.name)
    return bound


def color_credit(expected: str, said: set) -> float:
    # 1/k when the right color is among k distinct colors said: naming every color earns nothing
    return 1.0 / len(said) if expected in said else 0.0


def score_details(answer: str, record: dict) -> dict:
    # per-slot credit in [0, 1], slot names as in SLOTS[record["tag"]]
    tag, include = record["tag"], record["include"]
    names = [entry["class"] for entry in include]
    words = re.findall(r"[a-z0-9]+", str(answer or "").lower())  # "Teddy-bear!" -> teddy, bear
    objects = find_objects(words, OBJECTS + tuple(n for n in names if n not in OBJECTS))
    named = {m.name for m in objects}
    hits = [float(name in named) for name in names]  # one object slot per include entry
    if tag == "single_object":
        return {"object": hits[0]}
    if tag == "two_object":
        return {"first_object": hits[0], "second_object": hits[1]}
    if tag == "counting":
        count = stated_count(words, objects, names[0])
        return {"object": hits[0], "count": float(count == include[0]["count"])}
    if tag == "colors":
        said = {c.name for c in find_colors(words, objects)}
        return {"color": color_credit(include[0]["color"], said)}
    if tag == "position":
        obj, relation, ref = split_position(include)
        return {"object": float(obj in named), "reference": float(ref in named),
                "relation": float(relation_holds(words, objects, obj, relation, ref))}
    if tag == "color_attr":
        bound = bind_colors(find_colors(words, objects), objects)
        return {"first_object": hits[0], "second_object": hits[1],
                "first_color": color_credit(include[0]["color"], bound.get(names[0], set())),
                "second_color": color_credit(include[1]["color"], bound.get(names[1], set()))}
    raise ValueError(f"unknown tag {tag!r}; expected one of {', '.join(SLOTS)}")


def score_answer(answer: str, record: dict) -> float:
    # reward = mean slot credit, in [0, 1]
    details = score_details(answer, record)
    return sum(details.values()) / len(details)


def score_answers(answers, records) -> list:
    # one reward per (answer, record) pair; the caller reshapes them to (P, G)
    if len(answers) != len(records):
        raise ValueError(f"{len(answers)} answers for {len(records)} records")
    return [score_answer(answer, record) for answer, record in zip(answers, records)]


def is_correct(answer: str, record: dict) -> bool:
    # every slot right (the self-QA accuracy that gets logged)
    return score_answer(answer, record) == 1.0


def zero_variance_rows(rewards: torch.Tensor) -> torch.Tensor:
    # (P, G) -> (P,) bool: all G rewards equal, compared exactly (no float noise from a std)
    return rewards.amax(dim=1) == rewards.amin(dim=1)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    # A = (r - mean_g) / (std_g + eps) per prompt's group of G images; rewards (P, G) -> (P, G)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (P, G), got shape {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    means = rewards.mean(dim=1, keepdim=True)  # (P, 1)
    stds = rewards.std(dim=1, keepdim=True, correction=0)  # (P, 1) population std: G = 1 gives 0
    advantages = (rewards - means) / (stds + eps)  # (P, G)
    # a group whose images all scored the same carries no signal: exactly 0, never NaN
    return advantages.masked_fill(zero_variance_rows(rewards)[:, None], 0.0)


def zero_variance_fraction(rewards: torch.Tensor) -> float:
    # share of groups that give no gradient; worth logging every step
    if rewards.numel() == 0:
        return 0.0
    return zero_variance_rows(rewards).float().mean().item()
