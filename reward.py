"""The UniRL reward: score the model's answers about its own images, then normalise per group.

In a UniRL iteration the model draws G images for a prompt, answers the record's question about
each one, and this file turns each free-form answer into a reward in [0, 1] by plain keyword
matching against the record's `include` (no judge model: UniRL's figure grades "two chairs" /
"three bowls" / "four bowls" against "four bowls" as 0 / 1 / 2 points, i.e. one point per fact).
The reward is the mean credit over a category's slots:

    single_object  object                          the class named
    two_object     first_object, second_object     each class named
    counting       object, count                   "two chairs" 0, "three bowls" 1/2, "four bowls" 1
    colors         color                           the color said
    position       object, reference, relation     relation read in either direction
    color_attr     first_object, second_object, first_color, second_color

GRPO maximises exactly this number, so every way of saying more than one thing is priced, by one
rule for every slot:
  * a slot whose answer asserts the right value earns 1/k, where k counts the distinct values the
    answer claims for it, asserted or denied ("three or four bowls": count 1/2), plus one for each
    time a count or color is said again ("pink, pink": 1/2). A relation stated from both sides ("the
    dog is on the right and the teddy bear is on the left") is one claim; said twice, it is two.
  * a denied value earns nothing and still counts in k: "the car is pink, not red" 1/2, "not pink" 0.
  * objects: the n expected classes share n/k when the answer names k > n classes, denied ones
    included: listing every class earns about n/160. A class named twice is not a repeat: a sentence
    names an object again to say more about it ("A dog and a teddy bear. The dog is on the right.").
A hedge over k values of one slot thus earns exactly the mean of its k plain answers, whatever the
truth: never more than the best single guess, so GRPO gains nothing by hedging, negating or padding.

    answer (the plain answer earns 1)                          record                             reward
    all 160 object names ("orange broccoli" reads as one)      single_object bench                1/159
    all 160 object names                                       two_object bench, sports ball      2/159
    "There is no bench and no sports ball"                     two_object bench, sports ball      0
    "There is a bench but no cat"                              single_object bench                1/2
    "there are not four bowls"                                 counting four bowls                0
    "three or four bowls", "3-4 bowls", "four or more bowls"   counting four bowls                3/4
    "one two three four bowls"                                 counting four bowls                5/8
    "four bowls, four bowls"                                   counting four bowls                3/4
    "pink, pink" / all ten GenEval colors                      colors pink car                    1/2, 1/10
    "the dog is right of the teddy bear and left of it"        position dog right of teddy bear   5/6
    "the dog is not right of the teddy bear"                   position dog right of teddy bear   2/3
    "the wine glass is purple or black and the apple is ..."   color_attr purple wine glass, ...  3/4
  (tests/test_reward.py holds the full table, ADVERSARIAL.)

How an answer is read (all deliberate, all unit-tested):
  * words: lower case; a non-alphanumeric character separates words ("Teddy-bear!" = "teddy bear",
    "isn't" = "isn t", "3-4" = "3 4"). Punctuation and "and", "but", "or", "nor", "while" end a clause.
  * objects: whole words, singular or plural (also GenEval's "benchs"), plus a few synonyms (sofa,
    television, man...). Names are matched longest first over the whole 160-object vocabulary, so a
    class inside a longer name gets no credit: "wine glass" is never "glass", "hot dog" never "dog".
    A record's own classes join the vocabulary (the shapes world's "circle", "ring"...).
  * negation: "no", "not", "n't", "without", "neither", "nor", "never", "none"... deny what follows
    them in their clause up to and including the first object name or relation word: "no red car"
    denies red and car, "the dog is not left of the bear" denies only "left".
  * counts: digits or number words zero..ten, and vague quantities ("several", "more", "about"...)
    that claim a count that is never right; "a"/"an" are not counts. A count belongs to the first
    object after it ("three or four bowls"), else the nearest object before it ("the bowls are four").
    If the expected class is not named, every count in the answer is a claim ("four chairs": count 1).
  * colors: GenEval's ten plus other color words (gray, gold...) that count as wrong colors.
    "orange" is the fruit after a determiner, colors between allowed ("an orange", "a red orange"),
    and the color elsewhere; as an adjective ("an orange cat") it is never the fruit.
  * a color belongs to the object right after it, also across a run of colors ("a purple and white
    wine glass"), else to the nearest object before it ("the wine glass is purple"). The colors
    category asks about the one object, so there every color in the answer is a claim.
  * relations: left/right, above (also over, atop, "on top of"), below (under, beneath, underneath,
    bottom). Bare "on" is not a relation: it is contact, not a side. Every relation word is a claim,
    read within its clause: its subject is the nearest object before it and its landmark the first
    object after it; with one object in the clause the other is the nearest other object in the
    answer, so "the teddy bear is to the left of the dog" proves "dog right of teddy bear"; with none
    the clause goes on from the previous one ("..., not left of it"). A relation whose objects cannot
    be read ("it is right of the bear") is a claim that is never right.
Not priced: naming a class twice (see above); hedge words that name no value ("maybe pink"); denial
after the noun ("the ball is missing").

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
# quantities that hedge a count; each is a count claim that is never right ("four or more bowls")
VAGUE_COUNTS = {"several", "some", "many", "few", "multiple", "numerous", "more", "fewer", "less",
                "least", "most", "about", "around", "approximately", "roughly", "nearly", "almost"}
DETERMINERS = {"a", "an", "the", "this", "that", "one", "another", "each", "every"}
NEGATIONS = {"no", "not", "none", "never", "neither", "nor", "without", "nothing", "cannot",
             "isnt", "arent", "wasnt", "werent", "dont", "doesnt", "cant", "wont", "hasnt", "havent"}
CLAUSE_WORDS = {"and", "but", "or", "nor", "while", "whereas"}  # a clause also ends at . , ; : ! ?
JOINERS = {"and", "or"}  # may stand inside a run of colors: "a purple and white wine glass"

Mention = namedtuple("Mention", "name start end")  # a class, color or count found at words[start:end]
# a value claimed for a slot; side: the subject a relation is said of (None otherwise); denied: negated
Claim = namedtuple("Claim", "value side denied")


def read_words(answer) -> tuple:
    # (words, clause number of each word): "The dog, not the cat" -> [the, dog, not, the, cat], [0, 0, 1, 1, 1]
    words, clauses, clause = [], [], 0
    for token in re.findall(r"[a-z0-9]+|[.,;:!?]", str(answer or "").lower()):
        if not token[0].isalnum() or token in CLAUSE_WORDS:
            clause += 1
        if token[0].isalnum():
            words.append(token)
            clauses.append(clause)
    return words, clauses


# cached: every answer of a batch asks for the same classes, and building their surface forms is not free
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
    # every color word, except inside a longer object name or as a noun after a determiner (and colors)
    covered = {i: m for m in objects for i in range(m.start, m.end)}
    colors = []
    for i, word in enumerate(words):
        mention = covered.get(i)
        in_longer_name = mention is not None and mention.end - mention.start > 1
        j = i - 1
        while j >= 0 and words[j] in COLOR_WORDS:
            j -= 1  # "a red orange" is a fruit, "red orange yellow" three colors
        is_fruit = mention is not None and j >= 0 and words[j] in DETERMINERS
        if word in COLOR_WORDS and not in_longer_name and not is_fruit:
            colors.append(Mention(COLOR_WORDS[word], i, i + 1))  # "grey" is said as "gray"
    return colors


def find_counts(words: list) -> list:
    # every number (digits or zero..ten) and every vague quantity, whose value is the word itself
    return [Mention(int(w) if w.isdigit() else NUMBERS.get(w, w), i, i + 1) for i, w in enumerate(words)
            if w.isdigit() or w in NUMBERS or w in VAGUE_COUNTS]


def denied_words(words: list, clauses: list, objects: list) -> set:
    # indices a negation reaches: from the cue to the first object name or relation word in its clause
    ends = {m.start: m.end for m in objects}
    denied = set()
    for i, word in enumerate(words):
        is_cue = word in NEGATIONS or (word == "t" and i > 0 and words[i - 1].endswith("n"))  # "isn't"
        j = i + 1
        while is_cue and j < len(words) and clauses[j] == clauses[i]:
            if j in ends:  # "no red car": the object name closes the phrase
                denied.update(range(j, ends[j]))
                break
            denied.add(j)
            if words[j] in RELATION_WORDS:  # "not left of the bear": the bear itself is not denied
                break
            j += 1
    return denied


def nearest_other(objects: list, name: str, i: int):
    # the class of the nearest object before word i that is not `name`, else the first one after it
    before = [m.name for m in objects if m.end <= i and m.name != name]
    after = [m.name for m in objects if m.start > i and m.name != name]
    return before[-1] if before else (after[0] if after else None)


def find_relations(words: list, clauses: list, objects: list) -> list:
    # (word index, relation said, subject, landmark) for every relation word, read within its clause
    covered = {i for m in objects for i in range(m.start, m.end)}
    found = []
    for i, word in enumerate(words):
        if word not in RELATION_WORDS or i in covered:
            continue
        here = [m for m in objects if clauses[m.start] == clauses[i]]
        before = [m.name for m in here if m.end <= i]
        after = [m.name for m in here if m.start > i]
        of_follows = "of" in words[i + 1:i + 3]
        if before:  # "the dog is right of the bear", "the dog is on the right": subject first
            subject = before[-1]
            landmark = after[0] if after else nearest_other(objects, subject, i)
        elif len(after) >= 2 and word in ("left", "right") and not of_follows:
            subject, landmark = after[0], after[1]  # "on the left is a dog, then a bear"
        elif len(after) >= 2:
            subject, landmark = after[1], after[0]  # "to the left of the dog is a bear"
        elif after and of_follows:  # "right of the bear" after "A dog and a bear."
            subject, landmark = nearest_other(objects, after[0], i), after[0]
        elif after:  # "on the right a dog"
            subject, landmark = after[0], nearest_other(objects, after[0], i)
        else:  # no object in the clause: it goes on from the last one, "..., not left" / "..., or left"
            subject, landmark = found[-1][2:] if found else (None, None)
        found.append((i, RELATION_WORDS[word], subject, landmark))
    return found


def relation_claims(words: list, clauses: list, objects: list, denied: set, obj: str, ref: str) -> list:
    # the claims about the pair (obj, ref), as "obj REL ref": "ref INVERSE(REL) obj" says the same.
    # A relation whose subject or landmark cannot be read is a claim that is never right; one between
    # other objects is no claim about this pair (the extra object is priced by object_credits).
    claims = []
    for i, said, subject, landmark in find_relations(words, clauses, objects):
        if (subject, landmark) in ((obj, ref), (ref, obj)):
            value = said if subject == obj else INVERSE[said]
            claims.append(Claim(value, subject, i in denied))
        elif subject is None or landmark is None:  # "it is right of the bear"
            claims.append(Claim((said, subject, landmark), subject, i in denied))
    return claims


def bind_colors(colors: list, objects: list, words: list) -> dict:
    # class -> colors said of it: the object right after the run of colors, else the nearest one before
    starts = {m.start: m for m in objects}
    color_starts = {c.start for c in colors}
    bound = {}
    for color in colors:
        j = color.end
        while j < len(words) and (j in color_starts or words[j] in JOINERS):
            j += 1  # "a purple and white wine glass": both colors are the glass's
        target = starts.get(j)  # adjective: "a purple wine glass"
        if target is None:  # predicate: "the wine glass is purple"
            target = next((m for m in reversed(objects) if m.end <= color.start), None)
        if target:
            bound.setdefault(target.name, []).append(color)
    return bound


def bind_counts(counts: list, objects: list) -> dict:
    # class -> counts said of it: the first object after the count, else the nearest one before
    bound = {}
    for count in counts:
        target = next((m for m in objects if m.start >= count.end), None)  # "three or four bowls"
        if target is None:  # "the bowls are four"
            target = next((m for m in reversed(objects) if m.end <= count.start), None)
        if target:
            bound.setdefault(target.name, []).append(count)
    return bound


def as_claims(mentions: list, denied: set) -> list:
    # a color or count said twice is said twice, in whatever words: "4 bowls, four bowls" repeats
    return [Claim(m.name, None, m.start in denied) for m in mentions]


def claim_credit(expected, claims: list) -> float:
    # 1/k if the right value is asserted and never denied; k = distinct values + repeats
    values = {c.value for c in claims}
    repeats = len(claims) - len({(c.value, c.side) for c in claims})  # "pink, pink"; not "dog right, bear left"
    right = any(c.value == expected and not c.denied for c in claims)
    contradicted = any(c.value == expected and c.denied for c in claims)  # "pink, not pink"
    return 1.0 / (len(values) + repeats) if right and not contradicted else 0.0


def object_credits(names: list, objects: list, denied: set) -> list:
    # each expected class: named and never denied; n expected classes share n/k when k > n are named
    named = {m.name for m in objects}  # denied classes too: "a bench and no cat" names two
    refused = {m.name for m in objects if m.start in denied}
    share = min(1.0, len(set(names)) / len(named)) if named else 0.0
    return [share * (name in named and name not in refused) for name in names]


def score_details(answer: str, record: dict) -> dict:
    # per-slot credit in [0, 1], slot names as in SLOTS[record["tag"]]
    tag, include = record["tag"], record["include"]
    names = [entry["class"] for entry in include]
    words, clauses = read_words(answer)  # "Teddy-bear!" -> teddy, bear
    # the classes an answer may name: the 160 objects, plus a world's own vocabulary when its records carry one
    # (the shapes world), so naming a class outside the prompt is an extra claim there too
    extra = tuple(dict.fromkeys(n for n in (*record.get("classes", ()), *names) if n not in OBJECTS))
    objects = find_objects(words, OBJECTS + extra)
    if tag == "color_attr":  # "the jar is orange": there a color, not a third object
        objects = [m for m in objects if m.start not in {c.start for c in find_colors(words, objects)}]
    denied = denied_words(words, clauses, objects)
    hits = object_credits(names, objects, denied)  # one object slot per include entry
    if tag == "single_object":
        return {"object": hits[0]}
    if tag == "two_object":
        return {"first_object": hits[0], "second_object": hits[1]}
    if tag == "counting":
        counts = find_counts(words)
        if names[0] in {m.name for m in objects}:  # the counts said of that class
            counts = bind_counts(counts, objects).get(names[0], [])
        return {"object": hits[0], "count": claim_credit(include[0]["count"], as_claims(counts, denied))}
    if tag == "colors":
        colors = as_claims(find_colors(words, objects), denied)
        return {"color": claim_credit(include[0]["color"], colors)}
    if tag == "position":
        obj, relation, ref = split_position(include)
        obj_hit, ref_hit = object_credits([obj, ref], objects, denied)
        claims = relation_claims(words, clauses, objects, denied, obj, ref)
        return {"object": obj_hit, "reference": ref_hit, "relation": claim_credit(relation, claims)}
    if tag == "color_attr":
        bound = bind_colors(find_colors(words, objects), objects, words)
        first, second = (as_claims(bound.get(name, []), denied) for name in names)
        return {"first_object": hits[0], "second_object": hits[1],
                "first_color": claim_credit(include[0]["color"], first),
                "second_color": claim_credit(include[1]["color"], second)}
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


def credited(scores: list, credit: str) -> list:
    # --reward-credit: partial (UniRL) keeps the scores; all (beyond UniRL) is the judge's rule, 1 for a fully right
    # answer and 0 for any other
    if credit not in ("partial", "all"):
        raise ValueError(f"credit {credit!r}: choose partial or all")
    return list(scores) if credit == "partial" else [float(score == 1.0) for score in scores]


def is_correct(answer: str, record: dict) -> bool:
    # every slot right (the self-QA accuracy that gets logged)
    return score_answer(answer, record) == 1.0


def same_answer(answer: str) -> tuple:
    # what two answers must share to agree: their words as the reward reads them (case, punctuation, spacing aside)
    return tuple(read_words(answer)[0])


def agreement(answers, votes) -> list:
    # --answer-reward agreement (beyond UniRL): per image, the share of its other sampled answers (votes) that
    # say the same words as the trained answer. In expectation its gradient raises sum_a pi(a | image)^2, so
    # answers sharpen toward what the model itself reads in the image; the prompt's truth never enters.
    if len(answers) != len(votes):
        raise ValueError(f"{len(answers)} answers for {len(votes)} vote lists")
    return [sum(same_answer(v) == same_answer(a) for v in vs) / len(vs) for a, vs in zip(answers, votes)]


def reads_as_prompt(votes, records) -> list:
    # --answer-reward gated (beyond UniRL): per image, do most of its --votes sampled answers earn the prompt's full
    # reward? That is the model's own verdict that the image shows the prompt, with no judge: only those images'
    # answers train, so the prompt no longer labels the images the model itself sees failing.
    if len(votes) != len(records):
        raise ValueError(f"{len(votes)} vote lists for {len(records)} records")
    return [2 * sum(score_answer(v, record) == 1.0 for v in vs) > len(vs) for vs, record in zip(votes, records)]


def zero_variance_rows(rewards: torch.Tensor) -> torch.Tensor:
    # (P, G) -> (P,) bool: all G rewards equal, compared exactly (no float noise from a std)
    return rewards.amax(dim=1) == rewards.amin(dim=1)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    # A = (r - mean_g) / (std_g + eps) per prompt's group of G images; rewards (P, G) -> (P, G)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (P, G), got shape {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.float()  # 0/1 integer rewards: mean and std need floats
    means = rewards.mean(dim=1, keepdim=True)  # (P, 1)
    stds = rewards.std(dim=1, keepdim=True, correction=0)  # (P, 1) population std: G = 1 gives 0
    advantages = (rewards - means) / (stds + eps)  # (P, G)
    # a group whose images all scored the same carries no signal: exactly 0, never NaN
    return advantages.masked_fill(zero_variance_rows(rewards)[:, None], 0.0)


def kept_group_advantages(rewards: torch.Tensor, keep: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    # group_advantages over the kept entries of each group only (keep (P, G) bool): they alone make the group's
    # mean and std, and the others get exactly 0. A group with fewer than two kept scores that differ gives 0.
    if keep.shape != rewards.shape or keep.dtype != torch.bool:
        raise ValueError(f"keep must be a bool tensor shaped like the rewards {tuple(rewards.shape)}, "
                         f"got {keep.dtype} {tuple(keep.shape)}")
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    for row in range(rewards.shape[0]):
        kept = keep[row]
        if kept.any():
            advantages[row, kept] = group_advantages(rewards[row, kept][None], eps)[0]
    return advantages


def image_baseline_advantages(rewards: torch.Tensor, votes: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    # --answer-reward image-baseline (beyond UniRL): each answer's reward less the mean reward of the K more answers
    # sampled about its own image, over the std of all the group's answers and votes. rewards (P, G), votes (P, G, K)
    # -> (P, G). The votes are drawn apart from the trained answer, so the baseline does not depend on it; what it
    # removes is the image's own quality, which UniRL's shared advantage also puts on the answer. The scale, as GRPO's
    # group std, includes the answer's own reward (so, as in GRPO, unbiased only up to that scale), and it also holds
    # the spread between images, which the numerator no longer has: the answers' steps are smaller than UniRL's. An
    # image whose answers all score the same gives exactly 0 (its mean need not round back to their score), and so
    # does a group whose answers and votes all do, as a uniform group does in UniRL.
    if rewards.dim() != 2 or votes.dim() != 3 or votes.shape[:2] != rewards.shape:
        raise ValueError(f"rewards must be (P, G) and votes (P, G, K), got {tuple(rewards.shape)} and "
                         f"{tuple(votes.shape)}")
    rewards, votes = rewards.float(), votes.float()
    every = torch.cat([rewards[..., None], votes], dim=2).flatten(1)  # (P, G * (K + 1))
    stds = every.std(dim=1, correction=0)[:, None]  # (P, 1)
    advantages = (rewards - votes.mean(dim=2)) / (stds + eps)
    same = (votes == rewards[..., None]).all(dim=2)  # (P, G): the image's answers agree on the score
    return advantages.masked_fill(same | zero_variance_rows(every)[:, None], 0.0)


def zero_variance_fraction(rewards: torch.Tensor) -> float:
    # share of groups that give no gradient; worth logging every step
    if rewards.numel() == 0:
        return 0.0
    return zero_variance_rows(rewards).float().mean().item()
