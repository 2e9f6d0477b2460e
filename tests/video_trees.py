"""Small FF++-, Celeb-DF- and DFDC-shaped trees of mp4 videos made from a real face a package ships.

The face is scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain; in the skimage wheel).
A video is a slow pan and zoom over it, each video with its own flip, brightness, colour and path
(so no two videos share frames). A fake is the same video rendered from the photo after one of
the project's own manipulations (llava_df.data.manipulations) was applied to the face, with one
draw per video: consistent over its frames, as a real forgery is.

    ffpp_tree(root)      # FaceForensics++/{original,manipulated}_sequences/.../c23/videos + train/val/test.json
    celebdf_tree(root)   # Celeb-real/, YouTube-real/, Celeb-synthesis/, List_of_testing_videos.txt
    dfdc_tree(root)      # dfdc_train_part_0/metadata.json, test/labels.csv

PyAV writes the videos (the [faces] extra); callers skip when it is missing.
"""

from __future__ import annotations

import csv
import json
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from llava_df.data.faces import Landmarks
from llava_df.data.manipulations import ManipulationContext, apply_manipulation
from llava_df.data.video_frames import write_video

SIDE = 160  # frame side (even: yuv420p); the face is about 60 px, which dlib's detector finds upsampled once
# The astronaut's face in the 512x512 photo: dlib's 68 landmarks (measured once, FaceDetector) summed up.
ASTRONAUT = Landmarks(
    left_eye=(203.0, 101.5), right_eye=(246.0, 104.0), nose_tip=(225.0, 127.0), mouth=(223.0, 147.0),
    mouth_half_width=22.0, eye_half_width=8.5, inner_centre=(224.0, 128.0), inner_axes=(40.0, 50.0), roll=0.06,
)  # fmt: skip
# FF++ method -> the project's manipulation that stands in for it.
FFPP_STAND_INS = {"Deepfakes": "gan_upsample", "FaceSwap": "self_blend", "Face2Face": "expression_warp",
                  "NeuralTextures": "noise_inconsistency"}  # fmt: skip


@cache
def photo(name: str) -> np.ndarray:
    """A photo scikit-image ships (astronaut, chelsea, coffee), uint8 RGB, read from its wheel with PIL
    (skimage.data's own readers go through its deprecated io plugins)."""
    import skimage

    return np.asarray(Image.open(Path(skimage.__file__).parent / "data" / f"{name}.png").convert("RGB"))


def astronaut() -> np.ndarray:
    return photo("astronaut").astype(np.float32) / 255.0  # [512, 512, 3]


def manipulated(name: str, seed: int) -> np.ndarray:
    """The astronaut photo with ``name`` applied to her face (float [512, 512, 3])."""
    ctx = ManipulationContext(landmarks=ASTRONAUT, noise_sigma=0.01)
    return apply_manipulation(name, astronaut(), ctx, np.random.default_rng(seed), difficulty=1.0)


def frames(photo: np.ndarray, video_seed: int, n: int) -> list[np.ndarray]:
    """``n`` frames [SIDE, SIDE, 3] uint8 of one video: the face region panned and zoomed, the video's look applied."""
    rng = np.random.default_rng(video_seed)
    flip, gain, tint = rng.random() < 0.5, rng.uniform(0.8, 1.15), rng.uniform(-0.06, 0.06, 3)
    size0, dx, dy = rng.uniform(230, 260), rng.uniform(-2.5, 2.5), rng.uniform(-1.5, 1.5)
    image = Image.fromarray((np.clip(photo * gain + tint, 0, 1) * 255).astype(np.uint8))
    out = []
    for t in range(n):
        size = size0 * (1 - 0.01 * t)
        cx, cy = 224 + dx * t, 125 + dy * t
        box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        frame = image.transform((SIDE, SIDE), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)
        out.append(np.asarray(frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else frame))
    return out


def write(path: Path, photo: np.ndarray, video_seed: int, n: int) -> Path:
    return write_video(path, frames(photo, video_seed, n), fps=10, crf=12)


def no_face_video(path: Path, n: int) -> Path:
    """A video without a face: scikit-image's coffee cup."""
    cup = Image.fromarray(photo("coffee")).resize((SIDE, SIDE))
    return write_video(path, [np.asarray(cup)] * n, fps=10)


def ffpp_tree(
    root: Path, pairs: dict[str, list[list[str]]], methods=("Deepfakes", "FaceSwap"), n: int = 4
) -> Path:
    """FaceForensics++ (c23) with the official split's shape: ``pairs`` = {"train": [["000", "001"], ...], ...}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, items in pairs.items():
        (root / f"{split}.json").write_text(json.dumps(items))
    ids = sorted({i for items in pairs.values() for pair in items for i in pair})
    for vid in ids:
        write(root / "original_sequences/youtube/c23/videos" / f"{vid}.mp4", astronaut(), int(vid), n)
    for m, method in enumerate(methods):
        for items in pairs.values():
            for a, b in items:
                for target, source in (
                    (a, b),
                    (b, a),
                ):  # the target's video, the source's face: same motion as target
                    seed = 1000 * (m + 1) + int(target)
                    photo = manipulated(FFPP_STAND_INS[method], seed)
                    write(
                        root / f"manipulated_sequences/{method}/c23/videos/{target}_{source}.mp4",
                        photo,
                        int(target),
                        n,
                    )
    return root


def celebdf_tree(root: Path, n: int = 4) -> Path:
    """Celeb-DF v2: 2 Celeb-real, 1 YouTube-real, 3 Celeb-synthesis videos; the test list names 2 real and 2 fake."""
    root = Path(root)
    reals = [("Celeb-real", "id0_0000", 200), ("Celeb-real", "id1_0000", 201), ("YouTube-real", "00000", 202)]
    fakes = [
        ("Celeb-synthesis", "id0_id1_0000", 300),
        ("Celeb-synthesis", "id1_id0_0000", 301),
        ("Celeb-synthesis", "id0_id2_0000", 302),
    ]
    for folder, name, seed in reals:
        write(root / folder / f"{name}.mp4", astronaut(), seed, n)
    for folder, name, seed in fakes:
        write(root / folder / f"{name}.mp4", manipulated("self_blend", seed), seed, n)
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00000.mp4\n1 Celeb-real/id1_0000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n0 Celeb-synthesis/id0_id2_0000.mp4\n"
    )
    return root


def dfdc_tree(root: Path, n: int = 4) -> Path:
    """DFDC: one training part (2 REAL, 2 FAKE with their originals) and test/ (2 real, 2 fake; labels.csv, 1 = fake)."""
    root = Path(root)
    part = root / "dfdc_train_part_0"
    meta = {}
    for i, name in enumerate(("aaaaaaaaaa", "bbbbbbbbbb")):
        write(part / f"{name}.mp4", astronaut(), 400 + i, n)
        meta[f"{name}.mp4"] = {"label": "REAL", "split": "train"}
    for i, (name, original) in enumerate((("cccccccccc", "aaaaaaaaaa"), ("dddddddddd", "bbbbbbbbbb"))):
        write(part / f"{name}.mp4", manipulated("gan_upsample", 410 + i), 400 + i, n)
        meta[f"{name}.mp4"] = {"label": "FAKE", "split": "train", "original": original}
    (part / "metadata.json").write_text(json.dumps(meta))
    rows = []
    for i, (name, fake) in enumerate(
        (("eeeeeeeeee", 0), ("ffffffffff", 0), ("gggggggggg", 1), ("hhhhhhhhhh", 1))
    ):
        photo = manipulated("noise_inconsistency", 420 + i) if fake else astronaut()
        write(root / "test" / f"{name}.mp4", photo, 420 + i, n)
        rows.append({"filename": f"{name}.mp4", "label": fake})
    with open(root / "test" / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["filename", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return root
