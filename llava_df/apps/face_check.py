"""predict and the demo look for the face first: a crop like the training data's, a warning when none or several.

How to call (predict and the demo do)::

    check = face_check(mode="auto", data=detector.data)     # FaceCheck, or None for --face_crop off
    checked = check.prepare(images, scratch_dir)           # [Checked]: the file to score, faces seen, a warning

``--face_crop``:

- ``auto`` (default): the recipe the run's data was cropped with: ``extract.json`` beside its
  ``--data_dir`` (``llava-df data extract``), DeepfakeBench's alignment for a DeepfakeBench JSON;
  for any other data (the synthetic benchmark, your own crops) faces are looked for and the
  image is scored as given;
- ``align`` / ``margin``: crop so (llava_df.data.face_align), whatever the run's data;
- ``none``: look for faces and warn, score the image as given; ``off``: no face check at all.

An image without a face is scored as given, with a warning (the detector learnt from faces: its
score on a cat says nothing); with several faces the largest is cropped, with a warning. Without
the ``[faces]`` extra, ``auto`` and ``none`` say once that no face check ran; ``align`` and
``margin`` are refused before the model loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llava_df.apps.predict_flags import check_mode
from llava_df.cli_args import install_command
from llava_df.data.deepfakebench import is_deepfakebench_json
from llava_df.data.extract import SETTINGS_FILE
from llava_df.data.face_align import CropRecipe, FaceDetector, crop_face, faces_available
from llava_df.data.images import load_rgb

NOT_INSTALLED = (
    f"no face check: dlib is not installed ({install_command('faces')}); images are scored as given"
)


@dataclass(frozen=True)
class Checked:
    path: str  # the file scored: the face crop, or the image itself
    faces: int | None  # faces the detector saw; None when no check ran
    scored: str  # what was scored, in words
    warning: str | None


def run_recipe(data) -> tuple[CropRecipe | None, str]:
    """(the crop the run's training data had, or None; where that was read) from the run's DataArguments."""
    data_path, data_dir = getattr(data, "data_path", None), getattr(data, "data_dir", None)
    if data_path and Path(data_path).is_file() and is_deepfakebench_json(data_path):
        return CropRecipe(), f"DeepfakeBench's alignment (the run trained on {data_path})"
    settings = Path(data_dir) / SETTINGS_FILE if data_dir else None
    if settings is not None and settings.is_file():
        return CropRecipe.from_json(json.loads(settings.read_text())["crop"]), f"as {settings} records"
    return None, "the run's data records no face crop"


class FaceCheck:
    """Finds faces with DeepfakeBench's detector and crops them by ``recipe`` (None: warn only)."""

    def __init__(self, recipe: CropRecipe | None, source: str):
        self.recipe = recipe
        self.source = source  # where the recipe came from, said once on stderr
        self.detector = FaceDetector() if faces_available() else None

    def describe(self) -> str:
        if self.detector is None:
            return NOT_INSTALLED
        if self.recipe is None:
            return f"face check: faces looked for, images scored as given ({self.source})"
        return f"face check: the largest face {self.recipe.describe()} ({self.source})"

    def prepare(self, images: list, scratch: Path) -> list[Checked]:
        """One Checked per image (anything with a ``path``); crops are written to ``scratch`` as PNG."""
        if self.detector is None:
            return [Checked(im.path, None, "whole image (no face check)", None) for im in images]
        recipe = self.recipe and CropRecipe(
            **{**self.recipe.to_json(), "recheck": False}
        )  # a found face is used
        out = []
        for i, im in enumerate(images):
            rgb = np.asarray(load_rgb(im.path))
            if recipe is None:
                n = len(self.detector.boxes(rgb))
                out.append(Checked(im.path, n, "whole image", _warning(n, cropped=False)))
                continue
            found = crop_face(self.detector, rgb, recipe)
            if found.image is None:
                out.append(Checked(im.path, found.faces, "whole image", _warning(found.faces, cropped=False)))
                continue
            crop = scratch / f"{i:06d}.png"
            found.image.save(crop)
            kind = "aligned face" if recipe.kind == "align" else "face with margin"
            out.append(Checked(str(crop), found.faces, kind, _warning(found.faces, cropped=True)))
        return out


def _warning(faces: int, *, cropped: bool) -> str | None:
    if faces == 0:
        return "no face found: scored the whole image, though the detector learnt from faces (its score says little)"
    if faces > 1:
        return f"{faces} faces found: {'the largest was cropped and scored' if cropped else 'scored the whole image'}"
    return None


def face_check(mode: str, data) -> FaceCheck | None:
    """The FaceCheck of ``--face_crop mode`` for a run trained on ``data`` (its DataArguments); None for off."""
    check_mode(mode)
    if mode == "off":
        return None
    if mode == "auto":
        return FaceCheck(*run_recipe(data))
    if mode == "none":
        return FaceCheck(None, "--face_crop none")
    return FaceCheck(CropRecipe(kind=mode), f"--face_crop {mode}")
