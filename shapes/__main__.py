"""`python -m shapes`: a few records, ground-truth scenes and the judge's verdicts; writes shapes_demo.png."""

import random

import torch
from PIL import Image

from shapes import SIZE, describe, judge, make_shape_records, render_codes, sample_scene

rng = random.Random(0)
records = make_shape_records(6)  # one per tag
scenes = [sample_scene(record, rng) for record in records]
for record, codes in zip(records, scenes):
    print(f"{record['prompt']:<45} | {describe(codes)} | {judge(record, codes)}")
wrong = sample_scene(records[2], rng)  # a near miss: one object too many for the counting prompt
wrong[(wrong == 0).nonzero()[0]] = wrong.max()
print(f"{records[2]['prompt']:<45} | {describe(wrong)} | {judge(records[2], wrong)}")
strip = Image.new("RGB", (7 * (SIZE + 4), SIZE), "gray")
for i, image in enumerate(render_codes(torch.stack(scenes + [wrong]))):
    strip.paste(image, (i * (SIZE + 4), 0))
strip.save("shapes_demo.png")
