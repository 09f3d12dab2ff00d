"""GenEval-style training prompts, each with the question the model asks itself and its answer.

A UniRL iteration starts here. A record holds the prompt the model draws G images from, the
question it then answers about each of its own images, and the true answer that `reward.py` scores
those answers against: one line of GenEval's metadata format plus two fields.

    {"tag": "counting", "include": [{"class": "handbag", "count": 4}],
     "exclude": [{"class": "handbag", "count": 5}], "prompt": "a photo of four handbags",
     "question": "How many items in this image?", "answer": "four handbags"}

The six tags, the prompt wording and the QA templates are GenEval's and UniRL's released
GenEval-QA file. The objects are GenEval's 80 COCO classes plus 80 everyday objects (160, as in
the paper). Deliberate departures from the released files: correct plurals ("four benches", not
GenEval's "benchs") and "an" before a vowel in answers ("a toaster and an oven", not "a oven").

Usage:
    python prompts.py --n 1000 --seed 0 --out train.jsonl \
        --exclude data/geneval_metadata.jsonl   # prints counts per tag, number left out
"""
import argparse
import collections
import json
import os
import random
import tempfile

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

# GenEval's 80 class names, spelled exactly as in its evaluation_metadata.jsonl
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

# 80 more everyday, countable, drawable objects (the paper's extra objects were proposed by GPT-4o
# and not released). None is a color, number or relation word, so answers about them parse cleanly;
# "glass" and "mouse" deliberately sit inside COCO names ("wine glass", "computer mouse").
EXTRA_OBJECTS = (
    "rabbit", "duck", "chicken", "pig", "goat", "deer", "fish", "turtle", "frog", "owl",
    "butterfly", "mouse", "strawberry", "lemon", "pear", "peach", "pineapple", "watermelon",
    "tomato", "potato", "egg", "cookie", "cupcake", "cherry", "pumpkin", "croissant", "mug",
    "glass", "plate", "teapot", "kettle", "jar", "frying pan", "basket", "bucket", "candle",
    "lamp", "pillow", "mirror", "box", "ladder", "broom", "brush", "comb", "key", "coin", "wallet",
    "pencil", "notebook", "envelope", "hat", "shoe", "boot", "sock", "scarf", "wristwatch",
    "necklace", "belt", "guitar", "drum", "violin", "trumpet", "hammer", "screwdriver", "wrench",
    "shovel", "axe", "flashlight", "tractor", "helicopter", "rocket", "scooter", "tent", "balloon",
    "flag", "windmill", "camera", "globe", "crown", "leaf",
)
OBJECTS = COCO_CLASSES + EXTRA_OBJECTS

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
COUNTS = (2, 3, 4)
RELATIONS = ("left of", "right of", "above", "below")
NUMBER_WORDS = tuple("zero one two three four five six seven eight nine ten".split())

# UniRL's released GenEval-QA questions, verbatim (odd capitals and the missing "." included)
QUESTIONS = {
    "single_object": "What is the main item in this image?",
    "two_object": "What are two items in this image?",
    "counting": "How many items in this image?",
    "colors": "What is the color of the object?",
    "position": "What are two objects and What is position relationship between two main items? "
                "Use one sentence.",
    "color_attr": "What are two objects and the colors of two objects in the image? "
                  "Use one sentence",
}

# plurals that the suffix rules below get wrong; GenEval itself writes "persons", "sheeps", "knifes"
IRREGULAR_PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "leaf": "leaves",
                     "scarf": "scarves", "sheep": "sheep", "deer": "deer", "fish": "fish",
                     "skis": "skis", "scissors": "scissors", "tomato": "tomatoes",
                     "potato": "potatoes", "man": "men", "woman": "women", "child": "children"}

# how many include entries each tag has, and which field every entry must carry
SHAPES = {"single_object": (1, None), "two_object": (2, None), "counting": (1, None),
          "colors": (1, "color"), "position": (2, None), "color_attr": (2, "color")}
MAX_REDRAWS = 20  # make_records redraws a duplicate prompt at most this many times


def plural(name: str) -> str:
    # only the last word of a multi-word name inflects: "wine glass" -> "wine glasses"
    *head, last = name.split(" ")
    if last in IRREGULAR_PLURALS:
        last = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"  # bus -> buses, box -> boxes, bench -> benches
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"  # cherry -> cherries, but key -> keys
    else:
        last += "s"  # also broccoli -> broccolis and tv -> tvs, as GenEval writes them
    return " ".join(head + [last])


def number_word(n: int) -> str:
    if not 0 <= n < len(NUMBER_WORDS):
        raise ValueError(f"number_word covers 0..{len(NUMBER_WORDS) - 1}, got {n}")
    return NUMBER_WORDS[n]  # GenEval spells counts out: "a photo of four handbags"


def with_article(phrase: str) -> str:
    # GenEval's rule: "an" exactly when the next word starts with a vowel letter
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def colored(entry: dict) -> str:
    # "purple wine glass" when the entry has a color, else just the class
    return f"{entry['color']} {entry['class']}" if "color" in entry else entry["class"]


def split_position(include: list) -> tuple:
    # position records read "obj REL ref"; the obj entry holds [relation, index of ref]
    obj = next(e for e in include if "position" in e)
    relation, ref_index = obj["position"]
    return obj["class"], relation, include[ref_index]["class"]


def make_prompt(tag: str, include: list) -> str:
    first, second = include[0], include[-1]
    if tag == "counting":
        return f"a photo of {number_word(first['count'])} {plural(first['class'])}"  # four bowls
    if tag == "position":
        obj, relation, ref = split_position(include)
        return f"a photo of {with_article(obj)} {relation} {with_article(ref)}"  # obj REL ref
    if tag in ("two_object", "color_attr"):
        return f"a photo of {with_article(colored(first))} and {with_article(colored(second))}"
    return f"a photo of {with_article(colored(first))}"  # single_object, colors


def make_answer(tag: str, include: list) -> str:
    # the ground-truth answer depends on `include` alone, never on the prompt text
    first, second = include[0], include[-1]
    if tag == "single_object":
        return first["class"]  # "bench"
    if tag == "two_object":
        return f"There is {with_article(first['class'])} and {with_article(second['class'])}"
    if tag == "counting":
        return f"{number_word(first['count'])} {plural(first['class'])}"  # "four handbags"
    if tag == "colors":
        return first["color"]  # "pink": the question asks only for the color
    if tag == "position":
        obj, relation, ref = split_position(include)
        return f"The {obj} is {relation} the {ref}"  # "The dog is right of the teddy bear"
    return (f"The {first['class']} is {first['color']} "
            f"and the {second['class']} is {second['color']}")  # color_attr


def add_questions(record: dict) -> dict:
    # a shallow copy; question and answer are filled only where absent, so GenEval's file works too
    record = dict(record)
    if record.get("question") is None:
        record["question"] = QUESTIONS[record["tag"]]
    if record.get("answer") is None:
        record["answer"] = make_answer(record["tag"], record["include"])
    return record


def make_record(tag: str, rng: random.Random, *, objects=OBJECTS, colors=COLORS, counts=COUNTS,
                relations=RELATIONS) -> dict:
    if tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r}; use one of {', '.join(TAGS)}")
    # two distinct classes for every tag (one-object tags keep the first); color_attr: two colors
    first, second = rng.sample(objects, 2)
    include = [{"class": first, "count": 1}, {"class": second, "count": 1}][:SHAPES[tag][0]]
    record = {"tag": tag, "include": include}
    if tag == "counting":
        n = include[0]["count"] = rng.choice(counts)
        record["exclude"] = [{"class": first, "count": n + 1}]  # GenEval: exactly n, not n + 1
    elif tag == "colors":
        include[0]["color"] = rng.choice(colors)
    elif tag == "position":
        include[1]["position"] = [rng.choice(relations), 0]  # "a <second> REL a <first>"
    elif tag == "color_attr":
        for entry, color in zip(include, rng.sample(colors, 2)):
            entry["color"] = color
    record["prompt"] = make_prompt(tag, include)
    return add_questions(record)


def make_records(n: int, seed: int = 0, *, tags=TAGS, objects=OBJECTS, colors=COLORS,
                 counts=COUNTS, relations=RELATIONS) -> list:
    # tags cycle round-robin, so categories are balanced. A prompt already drawn in this call is
    # redrawn up to MAX_REDRAWS times, then kept (single_object has only len(objects) prompts).
    rng, options = random.Random(seed), dict(objects=objects, colors=colors, counts=counts,
                                             relations=relations)
    records, seen = [], set()
    for i in range(n):
        for _ in range(MAX_REDRAWS + 1):
            record = make_record(tags[i % len(tags)], rng, **options)
            if record["prompt"] not in seen:  # a set lookup: de-duplication is cheap
                break
        seen.add(record["prompt"])
        records.append(record)
    return records


def check_entry(entry, n_include: int, field=None) -> str:
    # what is wrong with one include/exclude entry, or "" when it is fine
    if not isinstance(entry, dict) or not isinstance(entry.get("class"), str) or not entry["class"]:
        return f"bad include entry {entry!r}: each entry needs a non-empty 'class' string"
    if type(entry.get("count")) is not int or entry["count"] < 1:
        return f"bad include entry {entry!r}: 'count' must be an integer >= 1"
    if field and not (isinstance(entry.get(field), str) and entry[field]):
        return f"bad include entry {entry!r}: this tag needs a non-empty {field!r} in every entry"
    position = entry.get("position", ["left of", 0])
    if not isinstance(position, list) or len(position) != 2:
        return f"bad include entry {entry!r}: 'position' must be [relation, index of the reference]"
    if position[0] not in RELATIONS:
        return f"unknown relation {position[0]!r}; use one of {', '.join(RELATIONS)}"
    if type(position[1]) is not int or not 0 <= position[1] < n_include:
        return f"bad include entry {entry!r}: the position index must point into 'include'"
    return ""


def check_record(record) -> str:
    # what is wrong with a parsed record, or "" when it is fine
    if not isinstance(record, dict):
        return "expected one JSON object per line"
    if missing := [key for key in ("tag", "include", "prompt") if key not in record]:
        return f"missing field {missing[0]!r}; every record needs 'tag', 'include' and 'prompt'"
    tag, include, exclude = record["tag"], record["include"], record.get("exclude", [])
    if tag not in TAGS:
        return f"unknown tag {tag!r}; use one of {', '.join(TAGS)}"
    size, field = SHAPES[tag]  # e.g. color_attr: 2 entries, each with a "color"
    if not isinstance(include, list) or len(include) != size or not isinstance(exclude, list):
        return f"a {tag} record needs 'include' as a list of {size} entries ('exclude': a list)"
    problems = [check_entry(e, size, field) for e in include]
    problems += [check_entry(e, size) for e in exclude]
    if tag == "position" and sum(isinstance(e, dict) and "position" in e for e in include) != 1:
        problems.append("a position record needs exactly one entry with 'position': [relation, 0]")
    problems += [f"{k!r} must be a string" for k in ("prompt", "question", "answer")
                 if k in record and not isinstance(record[k], str)]
    return next((p for p in problems if p), "")


def read_records(path) -> list:
    # blank lines are skipped; any bad line raises ValueError naming the file and 1-based line
    records = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problem = f"invalid JSON ({error.msg})"
            else:
                problem = check_record(record)
            if problem:
                raise ValueError(f"{path}, line {line_number}: {problem}. Fix or delete that line, "
                                 f"or regenerate the file with `python prompts.py --out {path}`.")
            records.append(add_questions(record))  # GenEval's own file has no QA yet
    return records


def write_records(path, records) -> None:
    # atomic: write a temporary file in the same folder, then rename it over `path`
    fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)
        os.replace(tmp_path, path)  # readers see the old file or the new one, never half of it
    except BaseException:
        os.unlink(tmp_path)  # no stray temp file after a failed write
        raise


# GenEval's 553 evaluation prompts, shipped with the repository (data/README.md: source and MIT license), so
# evaluation and the training exclusion find them on a fresh clone wherever the scripts are run from
GENEVAL_METADATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "geneval_metadata.jsonl")


def find_geneval_metadata():
    # the shipped GenEval prompt file, or None when it was deleted from the checkout
    return GENEVAL_METADATA if os.path.isfile(GENEVAL_METADATA) else None


def exclusion_file(choice, model: str):
    # train.py --exclude-prompts as a file to leave out, or None. The paper's training prompts do not overlap
    # GenEval's 553 (its appendix); this generator draws GenEval's own templates and classes, so it repeats
    # about 12 % of them (610 of 5,000 at seed 0: every COCO single object, many counts and colors). "auto"
    # therefore leaves out GenEval's prompts, shipped in data/; if that file is gone from the checkout, a
    # released model refuses to train and a tiny preset (tests, CPU smoke runs) keeps every prompt.
    if choice in (None, "none") or (choice == "auto" and model.startswith("shapes-")):
        return None  # the shapes world holds its own evaluation prompts out (train.load_records)
    if choice != "auto":
        if not os.path.isfile(choice):
            raise ValueError(f"--exclude-prompts {choice}: no such file (a resumed run reuses the path saved with "
                             f"it, relative to where it started: give --exclude-prompts again)")
        return choice
    found = find_geneval_metadata()
    if found is None and not model.endswith("-tiny"):
        raise ValueError(f"--exclude-prompts auto: {GENEVAL_METADATA} is missing; the generated training prompts "
                         f"repeat about 12 % of GenEval's evaluation prompts, which the paper's do not. Restore it "
                         f"(git checkout -- data/), or pass --exclude-prompts PATH, or --exclude-prompts none to "
                         f"train on them knowingly")
    return found


# spellings of a class that prompt_key folds into one name, besides plurals: common synonyms of COCO names
CLASS_SYNONYMS = {"people": "person", "persons": "person", "television": "tv", "sofa": "couch",
                  "doughnut": "donut", "motorbike": "motorcycle", "aeroplane": "airplane",
                  "cellphone": "cell phone", "mobile phone": "cell phone", "hair dryer": "hair drier"}
# a plural (ours, or GenEval's naive "benchs", "persons", "toothbrushs") -> its singular class name
SINGULARS = {**{name + "s": name for name in OBJECTS if not name.endswith("s")},
             **{plural(name): name for name in OBJECTS if plural(name) != name}}
# "A right of B" says the same as "B left of A": prompt_key writes every relation as left of / above
INVERSE_RELATIONS = {"right of": "left of", "below": "above"}


def canonical_class(name: str) -> str:
    # "Benchs", "benches" and "bench" -> "bench"; "people" -> "person"; unknown names only lower-cased
    name = " ".join(name.lower().split())
    name = CLASS_SYNONYMS.get(name, name)
    return SINGULARS.get(name, name)


def prompt_key(record) -> tuple:
    """What a record asks for, whatever its wording: records with equal keys are the same prompt.

    The key is the record's content, not its text: the tag, the set of (class, count, color) facts of
    `include`, and for position the relation. Classes are folded by `canonical_class`, so plurals, GenEval's
    naive plurals and synonyms meet ("three benches" == "three benchs", "three people" == "three persons").
    A set ignores entry order ("a stop sign and a knife" == "a knife and a stop sign"). The relation keeps
    its order, obj REL ref, but is written with "left of" / "above" only, so a consistently inverted one is
    the same prompt ("a dog right of a cat" == "a cat left of a dog"). `exclude` is implied by the tag
    (counting: exactly n) and left out.
    """
    tag, include = record["tag"], record["include"]
    facts = frozenset((canonical_class(e["class"]), e.get("count", 1), (e.get("color") or "").lower())
                      for e in include)
    relation = None
    if tag == "position":
        obj, rel, ref = split_position(include)
        obj, ref = canonical_class(obj), canonical_class(ref)
        relation = (ref, INVERSE_RELATIONS[rel], obj) if rel in INVERSE_RELATIONS else (obj, rel, ref)
    return tag, facts, relation


def prompt_text(record) -> str:
    # the prompt lower-cased with whitespace collapsed
    return " ".join(record["prompt"].lower().split())


def exclude_records(records, eval_records) -> tuple:
    # drops training records that ask for what an eval record asks for: the same prompt_key, or the same
    # prompt_text (which also catches a hand-written record whose include disagrees with its prompt)
    keys, texts = {prompt_key(r) for r in eval_records}, {prompt_text(r) for r in eval_records}
    kept = [r for r in records if prompt_key(r) not in keys and prompt_text(r) not in texts]
    return kept, len(records) - len(kept)  # (kept records, number excluded)


def hold_out(records, k: int) -> tuple:
    # (training, held_out): held_out is the last k records with distinct prompts (prompt_key), and training
    # loses every record that asks for one of them, wherever the generator repeated it, so the two are disjoint
    held_out, keys = [], set()
    for record in reversed(records):
        if len(held_out) == k:
            break
        if prompt_key(record) not in keys:
            keys.add(prompt_key(record))
            held_out.append(record)
    training, _ = exclude_records(records, held_out)
    return training, held_out[::-1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write GenEval-style training records (jsonl).")
    parser.add_argument("--n", type=int, default=1000, help="number of records to draw")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same file")
    parser.add_argument("--out", required=True, help="output .jsonl path")
    parser.add_argument("--exclude", help="jsonl of eval records whose prompts must be left out")
    args = parser.parse_args(argv)
    records, excluded = make_records(args.n, args.seed), 0
    if args.exclude:  # the output then holds fewer than n records
        records, excluded = exclude_records(records, read_records(args.exclude))
    write_records(args.out, records)
    print(f"wrote {len(records)} records to {args.out} (seed {args.seed})")
    for tag, count in collections.Counter(r["tag"] for r in records).items():
        print(f"  {tag:<14} {count}")
    print(f"excluded {excluded} records that ask for an eval prompt (same prompt_key or text)")


if __name__ == "__main__":
    main()
