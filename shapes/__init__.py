"""The shapes world: a tiny, exact stand-in for GenEval in which a small model can self-improve.

UniRL post-trains a unified model (Show-o, Janus) with GenEval-style prompts: the model draws an image
for "a photo of two dogs", answers a question about its own image, and the answer becomes a reward.
Judging real images needs Mask2Former + CLIP on a GPU. This world keeps the same prompts, records and
judging rules, but the "images" are rendered scenes that a CPU-sized model can learn in minutes.

The world:
  * A scene is a GRID x GRID board of cells. Each cell is empty or holds one shape of one color.
    SHAPES are plain nouns ("a photo of two crosses"); COLORS are 6 of GenEval's 10 color names.
  * Image tokenizer: one code per cell, row-major, N = GRID * GRID codes per image.
    code 0 = empty, code = 1 + shape_index * len(COLORS) + color_index, so NUM_CODES = 1 + 6 * 6 = 37.
    Decoding pastes one CELL x CELL tile per code onto a white canvas (a PIL image, or a float tensor
    for models that read pixels). A tile is a silhouette formula on pixel centres filled with an exact
    palette color: no anti-aliasing. Encoding (`parse_image`) cuts the image into cells and picks the
    nearest tile; all tiles differ, so render -> parse is an exact round trip.
  * Records are GenEval records (tag / include / exclude / prompt / question / answer) built by
    prompts.make_records with this vocabulary (see `make_shape_records`). A fixed split of the world's
    prompts (`split_of`) holds combinations out: `training_records` draws post-training prompts from the
    "train" side only, and `eval_records` draws evaluation prompts from the "eval" side only, in every
    category. (shapes/pretrain.py's base learns the whole world from true scenes, as a real base has seen captions
    like GenEval's; the split keeps the evaluation prompts away from UniRL's post-training.)
  * The models that live in this world (a tiny Janus, its exact codec, its evaluation) are in
    shapes/models.py; shapes/pretrain.py teaches them the world from rendered ground truth.

The judge is GenEval's per-image rules (djghosh13/geneval, evaluation/evaluate_images.py), the very function
that judges Mask2Former's detections (geneval.evaluate_image), fed with the board's exact detections:
  * Detections are exact: every non-empty cell is one object, score 1. Its box is its CELL box,
    so relations depend on the grid only. (GenEval's box is the tight box of the detected mask; ours
    would be the cell shrunk by its 1-pixel margin, the same for every shape. That changes the verdict
    only for centre offsets of 3 cells by 2, whose minor axis scores 0.499 with cell boxes and 0.506
    with tight ones: "right of" alone versus "right of" and "below".)
    GenEval sorts detections by detector score; all our scores tie, so the order is raster order
    (row by row, left to right). That order decides which objects are the "top-count" ones.
    GenEval's score thresholds (0.3, 0.9 for counting) and its 16-per-class cap are moot here:
    scores are all 1 and a 4x4 board holds at most 16 objects.
  * include {class, count}: take the top-`count` objects of the class; fail if fewer exist.
    Extra objects of the class, or of other classes, are allowed.
  * color: among those top-`count` objects, at least `count` must have the color (i.e. all of them).
    A blue circle that comes after a red one in raster order does not satisfy "a blue circle".
  * position [rel, i]: every top-`count` object must stand in `rel` to every object of the (matched)
    include group i, using GenEval's shrunk-centre rule with threshold 0.1 (`relative_position`).
  * exclude {class, count}: fail if at least `count` objects of the class exist. Counting prompts
    carry include n and exclude n + 1, so counting is exact.

Nothing runs at import time. `python -m shapes` prints a few records, ground-truth scenes and
verdicts, and writes shapes_demo.png.
"""
import functools
import itertools
import json
import random
import zlib

import numpy as np
import torch
from PIL import Image

import geneval
import prompts
from prompts import TAGS

SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross")  # plural: "crosses"
COLORS = ("red", "orange", "yellow", "green", "blue", "purple")  # a subset of GenEval's ten
PALETTE = {  # exact RGB per color; far apart from each other and from the white background
    "red": (230, 25, 45),
    "orange": (245, 130, 20),
    "yellow": (240, 200, 0),
    "green": (40, 160, 60),
    "blue": (20, 80, 230),
    "purple": (140, 40, 180),
}
BACKGROUND = (255, 255, 255)
GRID = 4  # cells per side
CELL = 16  # pixels per cell side -> a 64 x 64 canvas: one 16-px SigLIP patch per cell
NUM_CELLS = GRID * GRID  # N, image tokens per image
NUM_CODES = 1 + len(SHAPES) * len(COLORS)  # codebook size, code 0 = empty cell
SIZE = GRID * CELL  # canvas side in pixels
POSITION_THRESHOLD = 0.1  # GenEval's default `position_threshold`


# ----------------------------------------------------------------------------------------------
# Tokenizer: scenes <-> codes <-> pixels


def encode_cell(shape, color):
    """Code of one non-empty cell."""
    return 1 + SHAPES.index(shape) * len(COLORS) + COLORS.index(color)


def decode_cell(code):
    """(shape, color) of a non-empty code."""
    return SHAPES[(code - 1) // len(COLORS)], COLORS[(code - 1) % len(COLORS)]


def scene_to_codes(scene):
    """{(row, col): (shape, color)} -> LongTensor (N,) in row-major order, 0 where empty."""
    codes = torch.zeros(NUM_CELLS, dtype=torch.long)
    for (row, col), (shape, color) in scene.items():
        codes[row * GRID + col] = encode_cell(shape, color)
    return codes


def codes_to_scene(codes):
    """LongTensor or list (N,) -> {(row, col): (shape, color)} for the non-empty cells."""
    codes = [int(c) for c in codes]
    return {divmod(i, GRID): decode_cell(c) for i, c in enumerate(codes) if c != 0}


def _shape_mask(shape):
    """Boolean (CELL, CELL) silhouette: a formula tested at every pixel centre, so there is no
    anti-aliasing and each shape is mirror-symmetric about the cell centre. All shapes fit the same
    inner box (1-pixel margin), so the outline, not the size, tells them apart."""
    c = np.arange(CELL) + 0.5 - CELL / 2  # pixel-centre coordinates relative to the cell centre
    x, y = np.meshgrid(c, -c)  # (CELL, CELL) each; y points up here, only inside this function
    rho, R = np.hypot(x, y), CELL / 2 - 1  # distance from the centre; outer radius of every shape
    if shape == "circle":
        return rho <= R
    if shape == "square":
        return (abs(x) <= R) & (abs(y) <= R)
    if shape == "triangle":  # apex up, base on the bottom edge of the inner box
        return (y >= -R) & (abs(x) <= (R + 0.5 - y) / 2)
    if shape == "diamond":
        return abs(x) + abs(y) <= R
    if shape == "ring":  # a circle with a 2-pixel wall
        return (rho <= R) & (rho >= R - 2)
    if shape == "cross":  # a plus sign with 4-pixel-wide arms
        return ((abs(x) <= 2) | (abs(y) <= 2)) & (abs(x) <= R) & (abs(y) <= R)
    raise ValueError(f"unknown shape {shape!r}")


@functools.lru_cache(maxsize=1)
def code_tiles():
    """uint8 (NUM_CODES, CELL, CELL, 3): the pixels of every code. Built once, on first use."""
    tiles = np.empty((NUM_CODES, CELL, CELL, 3), dtype=np.uint8)
    tiles[0] = BACKGROUND
    for shape in SHAPES:
        mask = _shape_mask(shape)
        for color in COLORS:
            tile = np.empty((CELL, CELL, 3), dtype=np.uint8)
            tile[:] = BACKGROUND
            tile[mask] = PALETTE[color]
            tiles[encode_cell(shape, color)] = tile
    return tiles


def render_tensor(codes):
    """codes (B, N) -> float tensor (B, 3, SIZE, SIZE) in [0, 1], for models that read pixels."""
    codes = torch.as_tensor(codes, dtype=torch.long)
    assert codes.dim() == 2 and codes.shape[1] == NUM_CELLS, f"expected (B, {NUM_CELLS}) codes"
    tiles = torch.from_numpy(code_tiles()).float().div(255)  # (K, C, C, 3)
    return tiles_to_canvas(tiles[codes])  # (B, N, C, C, 3) -> (B, 3, SIZE, SIZE)


def tiles_to_canvas(cells):
    """Per-cell pixels (B, N, CELL, CELL, 3) or flat (B, N, CELL * CELL * 3), row-major cells ->
    canvases (B, 3, SIZE, SIZE). A pure reshuffle, so it carries gradients (shapes/models.py)."""
    B = cells.shape[0]
    x = cells.reshape(B, GRID, GRID, CELL, CELL, 3)  # (B, row, col, y, x, rgb)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, rgb, row, y, col, x)
    return x.reshape(B, 3, SIZE, SIZE)


def render_codes(codes):
    """codes (N,) -> PIL image, or (B, N) -> list of PIL images (SIZE x SIZE, RGB)."""
    codes = torch.as_tensor(codes, dtype=torch.long)
    batch = codes.dim() == 2
    pixels = render_tensor(codes.view(-1, NUM_CELLS)).mul(255).round().byte()  # (B, 3, H, W)
    images = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
    return images if batch else images[0]


def parse_image(image):
    """Image(s) -> codes. Takes a PIL image or a uint8 array (H, W, 3) with values 0-255 -> LongTensor
    (N,); or a float tensor (3, H, W) / (B, 3, H, W) in [0, 1], as render_tensor returns -> (N,) / (B, N).
    Each cell becomes the code of the nearest tile (Euclidean pixel distance). On a rendered image the
    distance to the right tile is 0 and to every other tile > 0, so the round trip is exact."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        pixels = image.detach().float().movedim(-3, -1) * 255  # (..., H, W, 3) in 0-255
    else:
        pixels = torch.from_numpy(np.array(image, dtype=np.float32))  # (H, W, 3), a writable copy
    assert pixels.shape[-3:] == (SIZE, SIZE, 3), f"expected {SIZE}x{SIZE} RGB, got {tuple(pixels.shape)}"
    cells = pixels.reshape(-1, GRID, CELL, GRID, CELL, 3)  # (B, row, y, col, x, rgb)
    cells = cells.permute(0, 1, 3, 2, 4, 5).reshape(-1, CELL * CELL * 3)  # (B * N, C*C*3), row-major
    tiles = torch.from_numpy(code_tiles()).float().reshape(NUM_CODES, -1)  # (K, C*C*3)
    codes = torch.cdist(cells, tiles).argmin(dim=1).view(-1, NUM_CELLS)  # (B, N)
    return codes if pixels.dim() == 4 else codes[0]


def describe(codes):
    """Human-readable list of the objects, e.g. 'red circle (0, 1); blue cross (2, 3)'."""
    scene = codes_to_scene(codes)
    parts = [f"{color} {shape} ({row}, {col})" for (row, col), (shape, color) in sorted(scene.items())]
    return "; ".join(parts) if parts else "empty"


# ----------------------------------------------------------------------------------------------
# The judge: GenEval's per-image rules on exact detections


def cell_box(row, col):
    """Pixel box (x0, y0, x1, y1) of a cell; its size is CELL, as in mmdet's x1 - x0."""
    return (col * CELL, row * CELL, (col + 1) * CELL, (row + 1) * CELL)


def box_cell(box):
    """(row, col) of the cell whose box `cell_box` gave."""
    return box[1] // CELL, box[0] // CELL


def detect(codes):
    """{class: [geneval.Detection, ...]}: the board's exact detections, in the form a detector's take after
    geneval.filter_detections. Every non-empty cell is one object of score 1 whose box is its cell's."""
    found = [geneval.Detection(shape, 1.0, cell_box(row, col))
             for (row, col), (shape, _) in sorted(codes_to_scene(codes).items())]  # raster order
    # GenEval's own filter, which drops nothing here: a score of 1 passes both cuts (0.3, and 0.9 for counting,
    # so no tag is needed) and 16 cells never exceed the 16-per-class cap. Its sort by score is stable, so
    # tied objects stay in raster order, and that order decides which are a class's top-`count` objects.
    return geneval.filter_detections(found, tag=None)


def relative_position(box_a, box_b):
    """Set of relations of A relative to B by GenEval's rule (geneval.relative_position): shrink the centre
    offset on each axis by POSITION_THRESHOLD * (size_a + size_b), then call a relation when the shrunk
    offset, divided by the norm of the raw offset, exceeds 0.5 on that axis. Image y points down."""
    return geneval.relative_position(box_a, box_b, POSITION_THRESHOLD)


def judge(record, codes):
    """(correct, reason) for one image: GenEval's rules (geneval.evaluate_image, the function that also judges
    Mask2Former's detections) on the exact detections. reason is "" when correct, as in GenEval."""
    scene = codes_to_scene(codes)
    color_of = lambda det: scene[box_cell(det.box)][1]  # noqa: E731, the exact colour stands in for CLIP's
    return geneval.evaluate_image(record, detect(codes), color_of, POSITION_THRESHOLD)


def judge_pixels(records, pixels):
    """The judge's verdict (bool) on each image of a batch (B, 3, SIZE, SIZE) in [0, 1], paired with its record in
    order, read from the pixels as the held-out evaluation reads them (train.py's --answer-reward judged)."""
    return [judge(record, codes)[0] for record, codes in zip(records, parse_image(pixels.float().cpu()))]


# ----------------------------------------------------------------------------------------------
# Ground truth: scenes that satisfy a record, and the records themselves


def _stands(cell, relation, targets, unambiguous):
    """Does `cell` stand in `relation` to every target cell (and, if unambiguous, in no other)?"""
    for target in targets:
        relations = relative_position(cell_box(*cell), cell_box(*target))
        if relation not in relations or (unambiguous and len(relations) > 1):
            return False
    return True


def _draw_scene(record, rng, distractors, unambiguous):
    """One random attempt at a scene for the record; None if a position constraint had no free cell."""
    scene, groups = {}, []  # groups[i] = cells of include i
    for req in record["include"]:
        cells = []
        for _ in range(req["count"]):
            free = [divmod(i, GRID) for i in range(NUM_CELLS) if divmod(i, GRID) not in scene]
            if "position" in req:  # keep the cells that stand in the relation to the whole target group
                relation, target = req["position"]
                free = [c for c in free if _stands(c, relation, groups[target], unambiguous)]
            if not free:
                return None
            cell = rng.choice(free)
            scene[cell] = (req["class"], req.get("color") or rng.choice(COLORS))
            cells.append(cell)
        groups.append(cells)
    # Distractors use classes the record never mentions, so they cannot change the verdict.
    named = {req["class"] for req in record["include"] + record.get("exclude", [])}
    others = [s for s in SHAPES if s not in named]
    for _ in range(distractors):
        free = [divmod(i, GRID) for i in range(NUM_CELLS) if divmod(i, GRID) not in scene]
        if not free or not others:
            break
        scene[rng.choice(free)] = (rng.choice(others), rng.choice(COLORS))
    return scene_to_codes(scene)


def sample_scene(record, rng, distractors=0, unambiguous=True, tries=100):
    """A random scene (LongTensor (N,)) that satisfies the record: free cells, colors and the position
    relation are drawn at random, and the result is checked with `judge`. rng: a random.Random.
    distractors: extra objects of classes the record does not name. unambiguous: the asked relation
    is the ONLY one that holds (no diagonal pairs that are also "below"), so the position answer is
    the one true answer; GenEval itself accepts diagonal pairs, and so does `judge`."""
    for _ in range(tries):
        codes = _draw_scene(record, rng, distractors, unambiguous)
        if codes is not None and judge(record, codes)[0]:
            return codes
    raise ValueError(f"no scene satisfies {record['prompt']!r} on a {GRID}x{GRID} grid")


def answer_for(record):
    """The ground-truth answer to the record's question about any scene that satisfies it: the
    record's own "answer", or prompts' template answer for a bare GenEval record."""
    return record.get("answer") or prompts.make_answer(record["tag"], record["include"])


def scene_answer(record, codes):
    """The record's answer worded from a scene that satisfies it, naming objects in raster order.

    The model answers from the image alone, and an image does not say which object the prompt named
    first: "a square right of a circle" and "a circle left of a square" draw the same scene. Naming
    the objects in raster order (top row first, then left to right) makes the answer a function of the
    image, which is what a reader can learn; reward.py scores both wordings the same. Other tags, and
    scenes that do not satisfy the record or hold a diagonal pair, get `answer_for(record)`."""
    tag, include = record["tag"], record["include"]
    if tag not in ("two_object", "position", "color_attr") or not judge(record, codes)[0]:
        return answer_for(record)
    objects = detect(codes)
    first_cell = lambda entry: box_cell(objects[entry["class"]][0].box)  # (row, col) of its top detection
    if tag == "position":
        a, b = sorted((include[0], include[1]), key=first_cell)
        relations = relative_position(cell_box(*first_cell(a)), cell_box(*first_cell(b)))
        if len(relations) != 1:
            return answer_for(record)
        return prompts.make_answer(tag, [{"class": b["class"], "count": 1},
                                         {"class": a["class"], "count": 1, "position": [relations.pop(), 0]}])
    return prompts.make_answer(tag, sorted(include, key=first_cell))


def make_shape_records(n, seed=0, tags=TAGS):
    """n GenEval-format records over the shapes vocabulary (counts 2-4 fit in the 16 cells). Each names the
    world's classes, so the reward counts a shape the prompt did not ask for as an extra claim."""
    records = prompts.make_records(n, seed, tags=tags, objects=SHAPES, colors=COLORS,
                                   counts=prompts.COUNTS, relations=prompts.RELATIONS)
    return [{**record, "classes": list(SHAPES)} for record in records]


EVAL_SEED = 1_000_003  # which held-out prompts eval_records draws, and in which order and wording
EVAL_PER_TAG = 16  # evaluation records per tag in train.py's evaluation, evaluate.py --shapes and the shapes bench

# train.py's defaults for the world's presets, applied under whatever the command line gives. Measured with
# shapes/bench.py: a small model on 2 CPU cores learns within a few minutes with them. The learning rate is the one
# the bench's sweep chose on its development seeds for GRPO on both tasks with UniRL's loss (shapes.bench
# ARM_SETTINGS, which a test holds these to): 1e-4, the first choice, gained more on the judge in 300 steps but lost
# understanding on every seed set.
_TRAIN = dict(steps=300, prompts_per_step=8, group_size=8, micro_batch=64, kl_beta=0.0, cfg_scale=3.0,
              temperature=1.0, timesteps=None, max_answer_tokens=16, eval_every=50, eval_samples=4, threads=2)
TRAIN_DEFAULTS = {
    "shapes-janus": {**_TRAIN, "lr": 1e-5},
    # Show-o's world base overcounts under guidance 3, so every counting group scores alike and GRPO sees no
    # contrast; at 1 it gains +0.089 +- 0.011 over 3 seeds, at 3 it loses 0.010 (docs/shapes_experiment.md,
    # Show-o's family)
    "shapes-showo": {**_TRAIN, "lr": 3e-5, "cfg_scale": 1.0},
}


# ----------------------------------------------------------------------------------------------
# The split: which prompts post-training may use, and which only evaluation sees

# Evaluation prompts are COMBINATIONS that post-training never shows, while every shape, color, count and relation
# still trains in other combinations; a gain on them is generalisation. The split is fixed (no seed), and
# `split_of` is its only definition: train.py's pool, the bench's pool and every evaluation go through it.
HELDOUT_SHAPES = ("diamond", "cross")  # single_object: 2 of the 6 shapes are evaluation prompts, 4 train
HELDOUT_EVERY = 3  # the other tags hold out one combination in 3 (Latin squares, or a hash of the prompt)


def _indices(names, record, field):
    """The index of each include entry's `field` in `names` (SHAPES or COLORS), or a clear error."""
    values = [entry.get(field) for entry in record["include"]]
    unknown = [v for v in values if v not in names]
    if unknown:
        raise ValueError(f"{record['prompt']!r}: {unknown[0]!r} is not a {field} of the shapes world "
                         f"({', '.join(names)}); split_of splits the world's own records only")
    return [names.index(v) for v in values]


def split_of(record) -> str:
    """"train" or "eval": the side of the world's fixed split that a record's prompt lies on.

    The rule reads the prompt's content, never its wording, so every wording of one prompt (prompts.prompt_key:
    entry order, "A right of B" == "B left of A") lands on the same side. With i the shape's index in SHAPES
    and j the color's in COLORS, a prompt is held out ("eval") when:
      single_object  its shape is in HELDOUT_SHAPES (diamond, cross): 2 of 6
      counting       a Latin square, n == COUNTS[i % 3] (circle 2, square 3, triangle 4, diamond 2, ring 3,
                     cross 4): 6 of 18, each shape held out at one count and each count for two shapes
      two_object     its unordered pair has (i1 + i2) % 3 == 0 (circle+diamond, square+triangle, square+cross,
                     triangle+ring, ring+cross): 5 of 15 pairs, each shape in one or two of them
      colors         a Latin square, (i - j) % 3 == 0 (circle and diamond: red, green; square and ring:
                     orange, blue; triangle and cross: yellow, purple): 12 of 36
      position,      the CRC-32 of its canonical key is divisible by 3: 17 of the 60 position keys (34 of
      color_attr     the 120 wordings) and 165 of the 450 color_attr keys (330 of the 900 wordings)
    """
    tag = record["tag"]
    shapes_ = _indices(SHAPES, record, "class")
    if tag == "single_object":
        held = SHAPES[shapes_[0]] in HELDOUT_SHAPES
    elif tag == "counting":
        held = record["include"][0]["count"] == prompts.COUNTS[shapes_[0] % len(prompts.COUNTS)]
    elif tag == "two_object":
        held = sum(shapes_) % HELDOUT_EVERY == 0
    elif tag == "colors":
        held = (shapes_[0] - _indices(COLORS, record, "color")[0]) % HELDOUT_EVERY == 0
    else:  # position, color_attr: too many combinations for a square; a hash that no Python run re-seeds
        _, facts, relation = prompts.prompt_key(record)
        canonical = json.dumps([tag, sorted(facts), relation])  # the key with its set in a fixed order
        held = zlib.crc32(canonical.encode()) % HELDOUT_EVERY == 0
    return "eval" if held else "train"


def world_records(tag):
    """Every distinct prompt of one tag in the world, as records of make_shape_records' format: 6 single_object,
    30 two_object (both orders), 18 counting, 36 colors, 120 position and 900 color_attr prompts."""
    pairs = list(itertools.permutations(SHAPES, 2))
    one = lambda shape, **fields: {"class": shape, "count": 1, **fields}  # noqa: E731
    includes = {
        "single_object": lambda: [[one(s)] for s in SHAPES],
        "two_object": lambda: [[one(a), one(b)] for a, b in pairs],
        "counting": lambda: [[{"class": s, "count": n}] for s in SHAPES for n in prompts.COUNTS],
        "colors": lambda: [[one(s, color=c)] for s in SHAPES for c in COLORS],
        "position": lambda: [[one(a), one(b, position=[rel, 0])] for a, b in pairs for rel in prompts.RELATIONS],
        "color_attr": lambda: [[one(a, color=ca), one(b, color=cb)] for a, b in pairs
                               for ca, cb in itertools.permutations(COLORS, 2)],
    }[tag]()
    records = []
    for include in includes:
        record = {"tag": tag, "include": include}
        if tag == "counting":  # exactly n, as prompts.make_record writes it
            record["exclude"] = [{"class": include[0]["class"], "count": include[0]["count"] + 1}]
        record["prompt"] = prompts.make_prompt(tag, include)
        records.append({**prompts.add_questions(record), "classes": list(SHAPES)})
    return records


def training_records(n, seed=0):
    """n post-training records, all on the "train" side of `split_of`: the first n such records of a pool
    drawn like make_shape_records' (tags round-robin), so the six tags stay about balanced."""
    draws = 2 * n  # about 2/3 of every tag trains, so 2n draws usually hold n of them
    while True:
        kept = [r for r in make_shape_records(draws, seed=seed) if split_of(r) == "train"]
        if len(kept) >= n:  # a draw is a prefix of any larger one (same seed), so the result does not depend on it
            return kept[:n]
        draws *= 2


def eval_records(per_tag=8, seed=EVAL_SEED):
    """`per_tag` evaluation records of each of the six tags (tags round-robin), all on the "eval" side of
    `split_of`. Each tag's held-out prompts (one wording per prompts.prompt_key, drawn from `seed`) are shuffled
    and taken in turn; a tag with fewer than `per_tag` of them repeats them. single_object holds out 2 prompts,
    so at 16 per tag each is evaluated 8 times, counting's 6 about 3 times: the repeats are not duplicates, since
    every evaluation record draws images (and a true scene) of its own."""
    rng = random.Random(seed)
    columns = []
    for tag in TAGS:
        wordings = {}  # prompt_key -> the held-out records that word it
        for record in world_records(tag):
            if split_of(record) == "eval":
                wordings.setdefault(prompts.prompt_key(record), []).append(record)
        held = list(wordings.values())
        rng.shuffle(held)
        columns.append([dict(rng.choice(held[i % len(held)])) for i in range(per_tag)])
    return [column[i] for i in range(per_tag) for column in columns]
