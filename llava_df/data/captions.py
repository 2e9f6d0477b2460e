"""Image-caption pairs of synthetic faces in LLaVA-Pretrain's format: stage 1 (projector alignment) offline.

How to call::

    llava-df data synthetic --captions --out data/captions --n 1000 --seed 0
    # -> data/captions/captions.json (a JSON list, like blip_laion_cc_sbu_558k.json) + images/<id>.png
    python -m llava_df.train --model_name_or_path tiny_llm --vision_tower tiny_clip --version plain \\
        --tune_mm_mlp_adapter True --data_path data/captions/captions.json --image_folder data/captions

A caption says what the face generator drew: hair colour and style, skin tone, head position and
tilt, expression, background colour and where the light comes from. The faces are real renders
(no manipulation) drawn from their own random stream, so no caption image is an image of the
deepfake benchmark of the same seed, and no caption mentions real or fake.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from llava_df.data.faces import (
    _HAIR,
    HAIR_STYLES,
    FaceParams,
    add_sensor_noise,
    render_face,
    sample_face_params,
)
from llava_df.data.images import jpeg_round_trip  # the benchmark's camera: the same JPEG round trip

_CAPTION_STREAM = 4  # after synthetic.py's _PLAN, _FACE, _CAMERA, _FORGE: other faces than the benchmark's
HAIR_NAMES = ("black", "dark brown", "light brown", "blond", "red", "grey")
COLOUR_NAMES = {
    "black": (0.1, 0.1, 0.1), "white": (0.9, 0.9, 0.9), "grey": (0.5, 0.5, 0.5), "red": (0.8, 0.2, 0.2),
    "green": (0.2, 0.7, 0.25), "blue": (0.2, 0.3, 0.8), "yellow": (0.85, 0.8, 0.2), "purple": (0.55, 0.25, 0.7),
    "orange": (0.9, 0.55, 0.15), "teal": (0.15, 0.6, 0.6), "pink": (0.9, 0.5, 0.7), "brown": (0.45, 0.3, 0.15),
}  # fmt: skip
# The human turns of LLaVA-Pretrain (a few of its phrasings); stage 1 with --version plain drops them.
PROMPTS = (
    "Render a clear and concise summary of the photo.",
    "Describe the image concisely.",
    "Give a brief description of the image.",
    "Write a terse but informative summary of the picture.",
)


def _nearest(colour, names: dict) -> str:
    c = np.asarray(colour)
    return min(names, key=lambda k: float(((np.asarray(names[k]) - c) ** 2).sum()))


def caption_for(p: FaceParams) -> str:
    """One sentence from the generator's parameters, e.g. 'A smiling face with short blond hair ...'."""
    hair_name = HAIR_NAMES[int(np.argmin(((_HAIR - np.asarray(p.hair)) ** 2).sum(1)))]
    style = HAIR_STYLES[p.hair_style]
    hair = "a bald head" if style == "bald" else f"{style} {hair_name} hair"
    skin = "dark" if p.skin_tone < 0.33 else "medium" if p.skin_tone < 0.66 else "light"
    mood = "smiling" if p.smile > 0.06 else "frowning" if p.smile < 0.0 else "neutral"
    side = "left of centre" if p.cx < 0.47 else "right of centre" if p.cx > 0.53 else "in the centre"
    tilt = "tilted left" if p.roll > 0.07 else "tilted right" if p.roll < -0.07 else "upright"
    background = _nearest(p.bg_top, COLOUR_NAMES)
    # light_angle: direction the light comes from in image coordinates (0 = from the right).
    dx, dy = math.cos(p.light_angle), math.sin(p.light_angle)
    light = (
        ("from the right" if dx > 0 else "from the left")
        if abs(dx) >= abs(dy)
        else ("from below" if dy > 0 else "from above")
    )
    return (
        f"A {mood} face with {skin} skin and {hair}, {tilt}, {side}, "
        f"in front of a {background} background, lit {light}."
    )


def write_captions(out: str | Path, n: int = 1000, seed: int = 0, image_size: int = 64) -> Path:
    """Write ``n`` image-caption pairs to ``out`` (images/ + captions.json); returns the JSON path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        params = sample_face_params(np.random.default_rng([seed, i, _CAPTION_STREAM, 0]))
        clean, _ = render_face(params, image_size)
        img = add_sensor_noise(
            clean, params.noise_sigma, np.random.default_rng([seed, i, _CAPTION_STREAM, 1])
        )
        name = f"images/cap{seed}_{i:06d}.png"
        jpeg_round_trip(img, params.jpeg_quality).save(out / name, format="PNG")
        records.append(
            {
                "id": f"cap{seed}_{i:06d}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": f"{PROMPTS[i % len(PROMPTS)]}\n<image>"},
                    {"from": "gpt", "value": caption_for(params)},
                ],
            }
        )
    path = out / "captions.json"
    path.write_text(json.dumps(records, indent=1) + "\n")
    return path
