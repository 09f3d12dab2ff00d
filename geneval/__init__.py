"""GenEval image scoring (Ghosh et al. 2023), rebuilt on transformers so it runs on CPU and GPU.

GenEval asks whether a generated image holds what its prompt asked for: the named objects
(single_object, two_object), exactly n of them (counting), a colour (colors, color_attr), or one
object left of / right of / above / below another (position). A Mask2Former instance segmenter
finds the objects and CLIP names their colours; fixed rules turn the detections into a yes/no per
image. The headline number is the plain mean of the six per-tag accuracies.

The official evaluator (djghosh13/geneval, evaluation/evaluate_images.py) needs mmcv/mmdet source
builds and asserts CUDA. This file keeps its rules and thresholds line for line, re-implements
mmdet's test pipeline and instance post-processing on the raw transformers outputs, and rebuilds
the open_clip zero-shot colour head. One thing cannot be matched here: GenEval's detector is
mmdet's retrained Swin-S checkpoint (743b7d99), while the hub has the original Mask2Former release,
`facebook/mask2former-swin-small-coco-instance`. Scores are therefore close to, not identical with,
the official ones; report them as "GenEval (transformers rebuild)".

Two layers, so the rules can be tested without models:
  rules:  Detection, filter_detections, relative_position, evaluate_image, summarize, format_table
  models: Mask2FormerDetector, ClipColorClassifier, GenEvalScorer

Run:
  python -m geneval outputs/geneval                 # score <dir>/<00000>/samples/<0000>.png, print table
  python -m geneval outputs/geneval/results.jsonl   # print the table of ours or the official results
"""
import argparse
import functools
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm import tqdm

DEFAULT_DETECTOR = "facebook/mask2former-swin-small-coco-instance"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
COLOR_TEMPLATES = ["a photo of a {c} {object}", "a photo of a {c}-colored {object}", "a photo of a {c} object"]
# detectron2's COCO names that GenEval's object_names.txt spells differently (same class index).
GENEVAL_NAMES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard"}
IMAGENET_MEAN, IMAGENET_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # mmdet, 0-255 scale
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
GREY = (153, 153, 153)  # "#999", the flat background GenEval pastes each object onto before CLIP


# ---------------------------------------------------------------------------- rule layer (no models)

@dataclass
class Detection:
    name: str                    # GenEval class name, e.g. "computer mouse"
    score: float                 # class prob x mean mask prob, in [0, 1]
    box: tuple                   # (x0, y0, x1, y1) in pixels, x1/y1 exclusive
    mask: np.ndarray | None = None  # (H, W) bool, or None when the detector gives no masks


def filter_detections(detections, tag, threshold=0.3, counting_threshold=0.9, max_per_class=16):
    """Group detections by class, best first; keep score > threshold and at most max_per_class.

    Counting prompts use the stricter threshold for *every* class of the image, so that the
    exclude clause (n+1 objects) is not tripped by weak duplicates. There is no NMS (GenEval's
    default max_overlap is 1.0)."""
    cut = counting_threshold if tag == "counting" else threshold
    kept = {}
    for det in sorted(detections, key=lambda d: d.score, reverse=True):
        group = kept.setdefault(det.name, [])
        if det.score > cut and len(group) < max_per_class:
            group.append(det)
    return {name: group for name, group in kept.items() if group}


def relative_position(box_a, box_b, threshold=0.1):
    """Relations of A relative to B ("left of", "right of", "above", "below"; image y points down).

    The centre offset is shrunk per axis by threshold * (size of A + size of B), so that objects
    that overlap a lot along an axis are not called left/right (or above/below) of each other."""
    a, b = np.asarray(box_a[:4], float).reshape(2, 2), np.asarray(box_b[:4], float).reshape(2, 2)
    offset = a.mean(0) - b.mean(0)                            # (dx, dy) centre of A minus centre of B
    sizes = np.abs(a[1] - a[0]) + np.abs(b[1] - b[0])         # (wA + wB, hA + hB)
    shrunk = np.maximum(np.abs(offset) - threshold * sizes, 0) * np.sign(offset)
    if np.all(np.abs(shrunk) < 1e-3):
        return set()
    dx, dy = shrunk / np.linalg.norm(offset)  # divided by the *raw* offset norm, as GenEval does
    relations = set()
    if dx < -0.5: relations.add("left of")
    if dx > 0.5: relations.add("right of")
    if dy < -0.5: relations.add("above")
    if dy > 0.5: relations.add("below")
    return relations


def evaluate_image(metadata, detections_by_class, color_of: Callable[[Detection], str] | None = None,
                   position_threshold=0.1):
    """GenEval's per-image decision: (correct, reason). Include clauses are ANDed, excludes ORed.

    `detections_by_class` is what filter_detections returns: {class: [Detection, ...]}, best first. Only the
    top-`count` detections of a class take part in the colour and position checks. `color_of` names one
    object's colour (the CLIP classifier; the shapes world's exact cell colour; a fake in tests). Both
    judges of this repository are this function: GenEvalScorer on Mask2Former's detections, shapes.judge
    on the exact detections of a rendered board."""
    correct, reasons, groups = True, [], []  # groups[i] = kept objects of include i, None if it failed
    for req in metadata.get("include", []):
        name, count = req["class"], req["count"]
        found = detections_by_class.get(name, [])[:count]
        matched = len(found) >= count
        if not matched:
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        if matched and "color" in req:
            if color_of is None:
                raise ValueError("a colour clause needs color_of")
            colors = [color_of(det) for det in found]
            hits = colors.count(req["color"])
            if hits < count:  # a vote: at least `count` of the kept objects must have the colour
                matched = False
                tally = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                color = req["color"]
                reasons.append(f"expected {color} {name}>={count}, found {hits} {color}; and {tally}")
        if matched and "position" in req:
            relation, target = req["position"]
            if groups[target] is None:
                matched = False
                reasons.append(f"no target for {name} to be {relation}")
            else:  # every kept object must stand in the relation to every object of the target group
                for det in found:
                    for other in groups[target]:
                        seen = relative_position(det.box, other.box, position_threshold)
                        if relation not in seen:
                            matched = False
                            # sorted: a set's order changes with the interpreter's string hashing
                            found_relations = " and ".join(sorted(seen)) or "no relation to"
                            reasons.append(f"expected {name} {relation} target, found {found_relations} target")
                            break
                    if not matched:
                        break
        correct = correct and matched
        groups.append(found if matched else None)
    for req in metadata.get("exclude", []):  # with count n+1 and the 0.9 cut, counting is an exact test
        n = len(detections_by_class.get(req["class"], []))
        if n >= req["count"]:
            correct = False
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    return correct, "\n".join(reasons)


def summarize(results):
    """Per-tag accuracy over images, overall = plain mean of the tag accuracies (not image-weighted)."""
    tasks = {}  # tag -> [correct, total], in order of first appearance like summary_scores.py
    prompts = {}  # a prompt counts as correct if any of its images is
    for r in results:
        counts = tasks.setdefault(r["tag"], [0, 0])
        counts[0] += bool(r["correct"])
        counts[1] += 1
        key = r.get("metadata") or r.get("prompt")
        key = key if isinstance(key, str) else json.dumps(key, sort_keys=True)
        prompts[key] = prompts.get(key, False) or bool(r["correct"])
    scores = {tag: {"score": c / n, "correct": c, "total": n} for tag, (c, n) in tasks.items()}
    return {
        "images": len(results),
        "prompts": len(prompts),
        "correct_images": sum(bool(r["correct"]) for r in results) / max(len(results), 1),
        "correct_prompts": sum(prompts.values()) / max(len(prompts), 1),
        "tasks": scores,
        "overall": float(np.mean([s["score"] for s in scores.values()])) if scores else 0.0,
    }


def format_table(summary):
    """The report printed by GenEval's summary_scores.py."""
    lines = ["Summary", "=======", f"Total images: {summary['images']}", f"Total prompts: {summary['prompts']}",
             f"% correct images: {summary['correct_images']:.2%}",
             f"% correct prompts: {summary['correct_prompts']:.2%}", "", "Task breakdown", "=============="]
    for tag, s in summary["tasks"].items():
        lines.append(f"{tag:<16} = {s['score']:.2%} ({s['correct']} / {s['total']})")
    lines += ["", f"Overall score (avg. over tasks): {summary['overall']:.5f}"]
    return "\n".join(lines)


def read_official_results(path):
    """Rows of a results jsonl (the official evaluator's or ours): correct, tag, prompt, metadata..."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl_atomic(path, rows):
    """Temporary file in the same folder, then rename: a crash never leaves half a results file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".results-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- model layer

def fit_size(width, height, scale=(1333, 800)):
    """mmcv's keep-ratio rescale: the largest size with long side <= max(scale), short <= min(scale)."""
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def detector_pixels(image, scale=(1333, 800), size_divisor=32, pad_value=128.0):
    """mmdet's Mask2Former test pipeline: resize, pad bottom/right with grey, then normalise.

    Returns pixels (1, 3, Hp, Wp) and the resized (h, w) before padding."""
    w, h = fit_size(*image.size, scale)
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    # cv2 INTER_LINEAR (mmcv's default) is half-pixel bilinear without antialiasing, on uint8.
    rgb = F.interpolate(rgb, size=(h, w), mode="bilinear", align_corners=False).round().clamp(0, 255)
    padded_h, padded_w = math.ceil(h / size_divisor) * size_divisor, math.ceil(w / size_divisor) * size_divisor
    # The LSJ config pads with (128, 128, 128) *before* Normalize, so padding is mid-grey, not the mean.
    pixels = torch.full((1, 3, padded_h, padded_w), pad_value)
    pixels[:, :, :h, :w] = rgb
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std, (h, w)


def masks_to_boxes(masks):
    """Tight (x0, y0, x1, y1) box of each (K, H, W) bool mask, ends exclusive; all zeros if empty."""
    cols, rows = masks.any(1), masks.any(2)                   # (K, W), (K, H)
    x0, y0 = cols.int().argmax(1), rows.int().argmax(1)       # first True
    x1 = cols.shape[1] - cols.flip(1).int().argmax(1)         # one past the last True
    y1 = rows.shape[1] - rows.flip(1).int().argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()          # (K, 4)
    boxes[~cols.any(1)] = 0
    return boxes


def postprocess_instances(class_logits, mask_logits, padded_hw, resized_hw, original_hw, max_per_image=100):
    """mmdet's MaskFormerFusionHead instance post-processing for one image.

    class_logits (Q, C+1) with no-object last; mask_logits (Q, h, w) at 1/4 of the padded input.
    Returns labels (K,), scores (K,), boxes (K, 4), masks (K, H, W) bool at the original size.
    Not transformers' post_process_instance_segmentation: that one binarises masks at 384x384 without
    cropping the padding, upsamples them with nearest neighbour, drops scores under 0.5, gives no boxes."""
    num_classes = class_logits.shape[1] - 1
    probs = class_logits.softmax(-1)[:, :-1]                  # (Q, C), no-object dropped
    # A query may propose several classes: rank all (query, class) pairs, keep the top 100.
    class_scores, flat = probs.flatten().topk(min(max_per_image, probs.numel()))  # (K,)
    labels, queries = flat % num_classes, flat // num_classes
    masks = F.interpolate(mask_logits[queries][None], size=padded_hw, mode="bilinear", align_corners=False)
    masks = masks[:, :, :resized_hw[0], :resized_hw[1]]       # crop the padding away
    masks = F.interpolate(masks, size=original_hw, mode="bilinear", align_corners=False)[0]  # (K, H, W)
    binary = masks > 0
    # score = class prob x mean foreground probability inside the predicted mask
    mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return labels, class_scores * mask_scores, masks_to_boxes(binary), binary


@functools.cache
def segmenter_class():
    """Mask2FormerForUniversalSegmentation for inference: the same parameter names and the same two outputs,
    without the training loss. transformers builds that loss in the head's __init__, and its Hungarian matcher
    requires scipy; scoring never trains, so this class keeps the network and the class head only.
    Defined on first use: importing transformers' Mask2Former takes seconds, and only the scorer needs it."""
    from transformers import Mask2FormerModel, Mask2FormerPreTrainedModel

    class Mask2FormerSegmenter(Mask2FormerPreTrainedModel):
        # released checkpoints also hold the loss's class-weight buffer; nothing here reads it
        _keys_to_ignore_on_load_unexpected = [r"^criterion\."]

        def __init__(self, config):
            super().__init__(config)
            self.model = Mask2FormerModel(config)
            self.class_predictor = torch.nn.Linear(config.hidden_dim, config.num_labels + 1)
            self.post_init()

        def forward(self, pixel_values):
            """Class logits (B, Q, C+1), no-object last, and mask logits (B, Q, h, w) of the last decoder layer."""
            # output_hidden_states: the per-layer decoder states, of which the head reads the last (as the
            # original head does, which asks for them to build its auxiliary losses)
            out = self.model(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
            queries = out.transformer_decoder_intermediate_states[-1].transpose(0, 1)  # (Q, B, D) -> (B, Q, D)
            return self.class_predictor(queries), out.masks_queries_logits[-1]

    return Mask2FormerSegmenter


def build_segmenter(source):
    """The segmenter from a hub id, a local folder (a Mask2FormerForUniversalSegmentation checkpoint) or a
    Mask2FormerConfig (random weights, for tests)."""
    from transformers import Mask2FormerConfig  # heavy, and only the scorer needs it

    if isinstance(source, Mask2FormerConfig):
        return segmenter_class()(source)
    return segmenter_class().from_pretrained(source)


class Mask2FormerDetector:
    """Runs the Mask2Former segmenter (build_segmenter) on a PIL image, returns GenEval Detections."""

    def __init__(self, model, scale=(1333, 800), size_divisor=32, max_per_image=100):
        self.model, self.scale, self.size_divisor = model.eval(), scale, size_divisor
        self.max_per_image = max_per_image
        id2label = model.config.id2label
        self.class_names = [GENEVAL_NAMES.get(id2label[i], id2label[i]) for i in range(len(id2label))]

    @torch.no_grad()
    def __call__(self, image):
        param = next(self.model.parameters())
        pixels, resized_hw = detector_pixels(image, self.scale, self.size_divisor)
        # No pixel_mask: mmdet's pixel decoder does not mask the padding either.
        class_logits, mask_logits = self.model(pixel_values=pixels.to(param.device, param.dtype))
        labels, scores, boxes, masks = postprocess_instances(
            class_logits[0].float(), mask_logits[0].float(),
            pixels.shape[-2:], resized_hw, image.size[::-1], self.max_per_image)
        rows = zip(labels.tolist(), scores.tolist(), boxes.tolist(), masks.cpu().numpy())
        return [Detection(self.class_names[label], score, tuple(box), mask) for label, score, box, mask in rows]


def object_crop(image, det, background=GREY):
    """The object's pixels on a flat grey background, cropped to its box (what CLIP sees)."""
    pixels = np.asarray(image.convert("RGB"))
    if det.mask is not None:
        pixels = np.where(det.mask[..., None], pixels, np.array(background, np.uint8))
    return Image.fromarray(pixels).crop(tuple(det.box[:4]))  # PIL rounds float boxes


def clip_pixels(image, size):
    """open_clip's OpenAI transform: bicubic resize of the short side, centre crop, CLIP mean/std."""
    w, h = image.size
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    image = image.convert("RGB").resize((new_w, new_h), Image.BICUBIC)
    left, top = int(round((new_w - size) / 2)), int(round((new_h - size) / 2))
    array = np.asarray(image.crop((left, top, left + size, top + size)), np.float32) / 255
    return ((torch.from_numpy(array) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).permute(2, 0, 1)


def _pooled(features):
    # transformers 5 returns a model output from get_*_features; older versions a tensor.
    return features if torch.is_tensor(features) else features.pooler_output


class ClipColorClassifier:
    """Zero-shot colour of an object crop among GenEval's 10 colours (clip_benchmark's recipe)."""

    def __init__(self, model, tokenizer, colors=COLORS, templates=COLOR_TEMPLATES):
        self.model, self.tokenizer, self.colors, self.templates = model.eval(), tokenizer, colors, templates
        self.image_size = model.config.vision_config.image_size
        self.heads = {}  # object name -> (D, n_colors) classifier, built once per class

    @torch.no_grad()
    def head(self, object_name):
        if object_name not in self.heads:
            device = next(self.model.parameters()).device
            columns = []
            for color in self.colors:
                texts = [t.format(c=color, object=object_name) for t in self.templates]
                tokens = self.tokenizer(texts, padding=True, return_tensors="pt")
                embeds = _pooled(self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)))
                mean = F.normalize(embeds.float(), dim=-1).mean(0)  # normalise each, average, renormalise
                columns.append(mean / mean.norm())
            self.heads[object_name] = torch.stack(columns, 1)       # (D, n_colors)
        return self.heads[object_name]

    @torch.no_grad()
    def classify(self, image, detections):
        param = next(self.model.parameters())
        pixels = torch.stack([clip_pixels(object_crop(image, d), self.image_size) for d in detections])
        feats = _pooled(self.model.get_image_features(pixel_values=pixels.to(param.device, param.dtype)))
        logits = F.normalize(feats.float(), dim=-1) @ self.head(detections[0].name)  # (N, n_colors)
        return [self.colors[i] for i in logits.argmax(1).tolist()]


class GenEvalScorer:
    """Detector + colour classifier + GenEval's rules; scores single images or a GenEval folder."""

    def __init__(self, detector, colors, threshold=0.3, counting_threshold=0.9, max_per_class=16,
                 position_threshold=0.1):
        self.detector, self.colors = detector, colors
        self.threshold, self.counting_threshold = threshold, counting_threshold
        self.max_per_class, self.position_threshold = max_per_class, position_threshold

    @classmethod
    def from_pretrained(cls, detector=DEFAULT_DETECTOR, clip=DEFAULT_CLIP, device=None, **kwargs):
        """Hub ids or local folders; fp32 throughout (GenEval's CLIP ran under fp16 autocast on CUDA)."""
        from transformers import AutoTokenizer, CLIPModel
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        segmenter = build_segmenter(detector).to(device)
        clip_model = CLIPModel.from_pretrained(clip).to(device)
        colors = ClipColorClassifier(clip_model, AutoTokenizer.from_pretrained(clip))
        return cls(Mask2FormerDetector(segmenter), colors, **kwargs)

    def score_image(self, image, metadata):
        image = image.convert("RGB")
        detections = filter_detections(self.detector(image), metadata["tag"], self.threshold,
                                       self.counting_threshold, self.max_per_class)
        color_of = lambda det: self.colors.classify(image, [det])[0]  # noqa: E731, one crop at a time
        correct, reason = evaluate_image(metadata, detections, color_of, self.position_threshold)
        details = {name: [[*d.box, d.score] for d in dets] for name, dets in detections.items()}
        return {"tag": metadata["tag"], "prompt": metadata.get("prompt", ""), "correct": correct, "reason": reason,
                "metadata": json.dumps(metadata), "details": json.dumps(details), "detections": detections}

    def score_folder(self, geneval_dir, outfile=None):
        """Score <dir>/<digits>/samples/<digits>.png against <dir>/<digits>/metadata.jsonl.

        Same walk as the official evaluator: other folder and file names are skipped silently.
        Writes the official results format (json strings for metadata and details) atomically."""
        results = []
        for folder in tqdm(sorted(os.listdir(geneval_dir)), desc="geneval", leave=False):
            folder_path = os.path.join(geneval_dir, folder)
            if not (os.path.isdir(folder_path) and folder.isdigit()):
                continue
            with open(os.path.join(folder_path, "metadata.jsonl")) as f:
                metadata = json.load(f)  # one JSON object, as the official generator writes it
            samples = os.path.join(folder_path, "samples")
            for name in sorted(os.listdir(samples)):
                path = os.path.join(samples, name)
                if not (os.path.isfile(path) and re.match(r"\d+\.png", name)):  # re.match, like the original
                    continue
                result = self.score_image(ImageOps.exif_transpose(Image.open(path)), metadata)
                result.pop("detections")
                results.append({"filename": path, **result})
        write_jsonl_atomic(outfile or os.path.join(geneval_dir, "results.jsonl"), results)
        return results


def main(argv=None):
    parser = argparse.ArgumentParser(description="GenEval scoring on transformers (see module docstring)")
    parser.add_argument("path", help="GenEval image folder to score, or a results .jsonl to summarise")
    parser.add_argument("--outfile", default=None, help="results jsonl (default: <folder>/results.jsonl)")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, help="Mask2Former hub id or local folder")
    parser.add_argument("--clip", default=DEFAULT_CLIP, help="CLIP hub id or local folder")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args(argv)
    if args.path.endswith(".jsonl"):
        results = read_official_results(args.path)
    else:
        scorer = GenEvalScorer.from_pretrained(args.detector, args.clip, args.device)
        results = scorer.score_folder(args.path, args.outfile)
    print(format_table(summarize(results)))

