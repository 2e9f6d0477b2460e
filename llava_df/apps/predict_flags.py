"""``llava-df predict``'s flags and inputs, checked before torch loads (llava_df.apps.predict scores them).

A bad flag, a missing image or an unwritable ``--output`` is one ``error:`` line at once.

How to call::

    args = parse(["--run_dir", "outputs/run", "faces/"])   # PredictArguments, args.paths: every image, once
"""

from __future__ import annotations

import glob
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llava_df.cli_args import install_command, parse_verb
from llava_df.data.face_align import faces_available
from llava_df.errors import UsageError
from llava_df.spec.ranges import check_threshold

DESCRIPTION = "is this face fake? P(Fake) for your own images from a trained detector."

# --face_crop (llava_df.apps.face_check finds and crops the face; the demo takes the same flag)
MODES = ("auto", "align", "margin", "none", "off")
FACE_CROP_HELP = (
    "Find the face first: auto (crop as the run's data was cropped: llava-df data extract's recipe, DeepfakeBench's "
    "for its JSON; else warn only), align, margin, none (warn only), off. Needs the [faces] extra (else: no check)."
)


def check_mode(mode: str) -> None:
    """UsageError for an unknown mode, or a crop asked for without the [faces] extra (before the model loads)."""
    if mode not in MODES:
        raise UsageError(f"--face_crop {mode!r}: expected one of {', '.join(MODES)}.")
    if mode in ("align", "margin") and not faces_available():
        raise UsageError(
            f"--face_crop {mode} needs dlib: {install_command('faces')}, or pass --face_crop off."
        )


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# ---- inputs ---------------------------------------------------------------------------------
def _images_under(folder: Path, walked: set[str]) -> tuple[list[str], int, list[str]]:
    """(image files under ``folder``, sorted; folders not walked again; folders that could not be listed).

    Symlinked folders are followed (a glob's ``**`` follows them too, and a user who links a
    folder in means it), each real folder once: ``walked`` holds the real paths seen so far, so a
    link loop ends and a folder linked twice is scored once.
    """
    found, repeats, unlisted = [], 0, []

    def unreadable(err: OSError) -> None:  # os.walk drops these silently unless told
        unlisted.append(f"{err.filename} ({err.strerror})")

    for top, dirs, files in os.walk(folder, followlinks=True, onerror=unreadable):
        keep = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(top, name))
            if real in walked:
                repeats += 1
            else:
                walked.add(real)
                keep.append(name)
        dirs[:] = keep
        found += [
            os.path.join(top, f)
            for f in files
            if Path(f).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(os.path.join(top, f))
        ]
    return sorted(found), repeats, unlisted


def expand_inputs(items: list[str]) -> tuple[list[str], list[str]]:
    """Files, folders (searched recursively) and globs -> (image paths, in order, each once; notes for
    stderr: folders walked once though reached twice, folders that could not be listed)."""
    if not items:
        raise UsageError(
            "no images given: pass image files, folders or globs, e.g. face.jpg faces/ 'dir/*.png'."
        )
    out: list[str] = []
    notes: list[str] = []
    walked: set[str] = set()
    for item in items:
        path = Path(item)
        if any(c in item for c in "*?["):
            found = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise UsageError(
                    f"{item!r} matches no file. Check the pattern (quote it so the shell does not expand it)."
                )
        elif path.is_dir():
            real = os.path.realpath(path)
            if real in walked:
                notes.append(f"{item}: already searched (the same folder, or one inside it, given before)")
                continue
            walked.add(real)
            found, repeats, unlisted = _images_under(path, walked)
            if repeats:
                notes.append(
                    f"{item}: {repeats} folder{'s' if repeats > 1 else ''} already searched (a symlink loop, a folder "
                    "linked twice, or given before) not searched again"
                )
            notes += [f"{item}: folder {u} could not be listed; its images are not scored" for u in unlisted]
            if not found and unlisted:
                raise UsageError(f"folder {unlisted[0]} could not be listed. Pass a folder you can read.")
            if not found:
                raise UsageError(
                    f"folder {item} has no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, in subfolders too). "
                    "Pass a folder of images or the files themselves."
                )
        elif path.is_file():
            found = [item]
        else:
            raise UsageError(f"{item}: no such file or folder. Pass image files, folders or globs.")
        out.extend(found)
    return list(dict.fromkeys(out)), notes


def check_output(path: Path) -> None:
    """UsageError now, before any image is read or the model loads, unless ``path`` can be written:
    a .csv or .jsonl name, not a folder, in an existing folder that takes new files."""
    if path.is_dir():
        raise UsageError(
            f"--output {path} is a folder: expected a .csv or .jsonl file name, e.g. {path / 'predictions.csv'}."
        )
    if path.suffix not in (".csv", ".jsonl"):
        raise UsageError(f"--output {path}: expected a .csv or .jsonl file name.")
    parent = path.parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())  # "/" or "." always exists
    if not existing.is_dir():
        raise UsageError(f"--output {path}: {existing} is a file, not a folder. Pass a path inside a folder.")
    if existing != parent:
        raise UsageError(f"--output {path}: folder {parent} does not exist; create it first.")
    try:  # the write itself renames a new file into this folder; an anonymous one tests that and leaves nothing
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise UsageError(
            f"--output {path}: cannot create files in {parent} ({err.strerror}). Pass a path in a folder you can "
            "write to."
        ) from None


@dataclass
class PredictArguments:
    """``llava-df predict``'s flags (the images are its positional arguments)."""

    run_dir: str | None = field(default=None, metadata={"help": "A training run's --output_dir."})
    model_dir: str | None = field(
        default=None, metadata={"help": "A `llava-df merge` output, instead of --run_dir."}
    )
    weights: Literal["best", "final"] = field(default="best", metadata={"help": "Which weights of the run."})
    threshold: float | None = field(
        default=None, metadata={"help": "Cut on P(Fake); None: the run's threshold.json."}
    )
    output: str | None = field(
        default=None, metadata={"help": "Also write the rows to this .csv or .jsonl file."}
    )
    batch_size: int = field(default=8, metadata={"help": "Images per forward pass."})
    generate: bool = field(default=False, metadata={"help": "Also generate the model's free-text answer."})
    prompt: str | None = field(
        default=None,
        metadata={"help": "The question for --generate (None: the run's prompt); must hold <image>."},
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Length limit of a generated answer."})
    allow_base_mismatch: bool = field(
        default=False, metadata={"help": "Load the run's weights even onto another base revision."}
    )
    face_crop: str = field(default="auto", metadata={"help": FACE_CROP_HELP})  # llava_df.apps.face_check
    images: list[str] = field(default_factory=list, init=False)  # the positional arguments
    paths: list[str] = field(default_factory=list, init=False)  # the image files they name, each once
    notes: list[str] = field(default_factory=list, init=False)  # for stderr: folders reached twice, unlisted


def parse(argv: list[str]) -> PredictArguments:
    """The flags and images of ``argv``, every value checked (UsageError) before anything is read or loaded."""
    args, _ = parse_verb(
        PredictArguments, argv, prog="llava-df predict", description=DESCRIPTION,
        positional=("images", "*", "Image files, folders (recursive) and globs."),
    )  # fmt: skip
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: expected an integer >= 1.")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens {args.max_new_tokens}: expected an integer >= 1.")
    if args.threshold is not None:
        check_threshold(args.threshold)
    if args.prompt is not None and args.prompt.count("<image>") != 1:
        raise UsageError(f"--prompt {args.prompt!r}: expected exactly one <image> (where the image goes).")
    if (args.run_dir is None) == (args.model_dir is None):
        raise UsageError(
            "pass exactly one of --run_dir (a training run) and --model_dir (a merged checkpoint)."
        )
    for flag, folder in (("--run_dir", args.run_dir), ("--model_dir", args.model_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise UsageError(
                f"{flag} {folder}: no such folder. Pass a training run's --output_dir (or one of its checkpoints), "
                "or a `llava-df merge` output with --model_dir."
            )
    check_mode(args.face_crop)
    if args.output:
        check_output(Path(args.output))
    object.__setattr__(args, "paths", [])
    args.paths, args.notes = expand_inputs(args.images)
    return args
