"""``llava-df predict``: is this face fake? P(Fake) for your own images from a trained detector.

How to call::

    llava-df predict --run_dir outputs/run face.jpg faces/ 'more/**/*.png' [--output predictions.csv]
    llava-df predict --run_dir outputs/run --weights final --threshold 0.4 faces/
    llava-df predict --model_dir outputs/run-merged faces/            # a `llava-df merge` output
    llava-df predict --run_dir outputs/run --generate --prompt "<image>\\nIs this face real or fake? Explain why." face.jpg
    llava-df predict --help                                           # every flag, with its default

One row per image (a table on stdout; ``--output x.csv`` or ``x.jsonl`` for a file): path,
P(Fake) (the score ``evaluate`` uses: softmax over the first answer token of Real vs Fake), the
label at the threshold, the threshold and where it came from, the image's size and mode,
whether it was converted to RGB, a ``warning`` for an image far from what the model sees (a side
under half its input size, or an aspect ratio beyond 4:1) and, for a file that was not scored,
the ``skipped`` reason (its P(Fake) and label empty). ``--generate`` adds the model's free-text
answer, parsed to Real / Fake / unparseable, with how often parsing failed and how often the
parsed answer disagrees with the score.

Folders are searched recursively, into symlinked folders too, each real folder once (a link loop
or a second link to the same folder is walked once, and counted on stderr). The image pipeline
is training's: ``data.images`` reads each file (an image above ``MAX_PIXELS`` is skipped from
its header, never decoded), then the run's processor, prompt, template and
``--image_aspect_ratio``; batched through the same Trainer scoring as ``evaluate``. Every
argument, ``--output`` included (a file name in a folder that exists and takes files), is checked
before the model loads; when no image is readable, nothing is written. The threshold is the
run's ``threshold.json`` (chosen on validation by ``--threshold_rule``) unless ``--threshold``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llava_df.apps.face_check import FaceCheck
from llava_df.apps.face_check import face_check as make_face_check
from llava_df.apps.predict_flags import PredictArguments, parse
from llava_df.data.conversation import get_template
from llava_df.data.images import ImageLoadError, load_rgb, load_rgb_with_info
from llava_df.errors import RunError, UsageError, cli_entry
from llava_df.eval.detector import SAVED, Detector, answer_head_of_run
from llava_df.io import write_text
from llava_df.threads import use_chosen_threads

logger = logging.getLogger(__name__)

# An image whose side is under this fraction of the model's input, or whose long side is more than
# MAX_ASPECT times its short one, is scored but flagged: upscaled from a few pixels, or squeezed /
# padded until the face is a sliver, it is not what the detector learnt from.
MIN_SIDE_FRACTION = 0.5
MAX_ASPECT = 4.0


@dataclass
class ImageInput:
    """An image that decoded once (so it is readable); its pixels are read again per batch, as training
    reads its data, so a folder of large photos is never held in memory at once."""

    path: str
    width: int = 0
    height: int = 0
    mode: str = ""
    converted: bool = False  # not stored as 8-bit RGB: converted like training converts it (images.to_rgb)


# ---- inputs ---------------------------------------------------------------------------------
def read_images(paths: list[str]) -> tuple[list[ImageInput], list[tuple[str, str]]]:
    """(readable images, skipped (path, reason)): each file decoded once, as training decodes it
    (images.load_rgb_with_info: MAX_PIXELS checked from the header first), then let go."""
    good, skipped = [], []
    for path in paths:
        try:
            # a full decode: truncated or corrupt files are caught here, not mid-batch
            _, info = load_rgb_with_info(path)
        except ImageLoadError as err:
            skipped.append((path, err.reason))
            continue
        good.append(ImageInput(path, info.width, info.height, info.mode, converted=info.mode != "RGB"))
    return good, skipped


def model_input_size(processor) -> tuple[int, int] | None:
    """(width, height) of the image the model sees: the image processor's crop size, else its resize size."""
    ip = getattr(processor, "image_processor", processor)
    for attr in ("crop_size", "size"):
        size = getattr(ip, attr, None)
        if size is None:
            continue
        height, width = size.get("height"), size.get("width")  # a dict or transformers' SizeDict
        if height and width:
            return int(width), int(height)
        if size.get("shortest_edge"):
            return int(size["shortest_edge"]), int(size["shortest_edge"])
    return None


def size_warning(width: int, height: int, input_size: tuple[int, int] | None) -> str | None:
    """Why an image of width x height is a poor input for a model that sees ``input_size``, or None."""
    problems = []
    if input_size is not None:
        in_w, in_h = input_size
        if width < MIN_SIDE_FRACTION * in_w or height < MIN_SIDE_FRACTION * in_h:
            problems.append(
                f"{width}x{height} is under half the model's {in_w}x{in_h} input on a side: upscaled, the score says "
                "little; use a larger face crop"
            )
    if max(width, height) > MAX_ASPECT * min(width, height):
        problems.append(
            f"{width}x{height} has an aspect ratio beyond {MAX_ASPECT:.0f}:1: the model sees a squeezed or mostly "
            "padded strip; crop to the face"
        )
    return "; ".join(problems) or None


# ---- the detector ---------------------------------------------------------------------------
NO_TEXT_ANSWER = (
    "--generate with {run}: it was trained with --answer_head classifier, a 2-class head that writes no text. "
    "Drop --generate (P(Fake) and the label are still given)."
)


def check_generate(run_dir: str | None, weights: str) -> None:
    """--generate on a classifier-head run is refused before any weight loads (from its checkpoint json)."""
    if run_dir is not None and answer_head_of_run(run_dir, weights) == "classifier":
        raise UsageError(NO_TEXT_ANSWER.format(run=run_dir))


def load_detector(
    run_dir: str | None = None,
    *,
    model_dir: str | None = None,
    weights: str = "best",
    threshold: float | None = None,
    allow_base_mismatch: bool = False,
) -> Detector:
    """--run_dir (a run, or one of its checkpoints) or --model_dir (a merge output) through Detector.from_pretrained."""
    if (run_dir is None) == (model_dir is None):
        raise UsageError(
            "pass exactly one of --run_dir (a training run) and --model_dir (a merged checkpoint)."
        )
    return Detector.from_pretrained(
        run_dir or model_dir, weights=weights, threshold=SAVED if threshold is None else threshold,
        allow_base_mismatch=allow_base_mismatch,
    )  # fmt: skip


def parse_answer(text: str, answer_real: str = "Real", answer_fake: str = "Fake") -> str | None:
    """'Real' / 'Fake' when the answer names exactly one of them (first word first), else None."""
    words = ["".join(c for c in w if c.isalnum()).lower() for w in text.split()]
    real, fake = answer_real.lower(), answer_fake.lower()
    if words and words[0] in (real, fake):
        return answer_real if words[0] == real else answer_fake
    named = {w for w in words if w in (real, fake)}
    if len(named) == 1:
        return answer_real if named.pop() == real else answer_fake
    return None


@torch.no_grad()
def generate_answers(
    detector: Detector,
    images: list[ImageInput],
    prompt: str | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 8,
) -> list[str]:
    """The model's free-text answer per image, from generate() with the run's conversation template."""
    d = detector
    template = get_template(d.data.conv_template)
    prefix, _ = template.build(prompt or d.data.prompt, "", "")
    tokenizer = d.processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues every row at its end
    model = d.model
    device = next(p for p in model.parameters()).device
    answers: list[str] = []
    try:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = d.processor(
                images=[load_rgb(im.path) for im in chunk],
                text=[prefix] * len(chunk),
                padding="longest",
                return_tensors="pt",
            ).to(device)
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = out[:, batch["input_ids"].shape[1] :]
            answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return answers


def predict(
    detector: Detector,
    images: list[ImageInput],
    *,
    batch_size: int = 8,
    generate: bool = False,
    prompt: str | None = None,
    max_new_tokens: int = 48,
    face_check: FaceCheck | None = None,
) -> tuple[list[dict], dict]:
    """(one row per image, a summary with the generation statistics). ``face_check``: find and crop the face
    first (llava_df.apps.face_check), adding the columns faces, scored and face_warning."""
    d = detector
    if generate and d.info.get("answer_head") == "classifier":
        raise UsageError(NO_TEXT_ANSWER.format(run=d.info.get("run")))
    with tempfile.TemporaryDirectory(prefix="llava_df_faces_") as scratch:
        checked = face_check.prepare(images, Path(scratch)) if face_check is not None else None
        inputs = (
            images
            if checked is None
            else [dataclasses.replace(im, path=c.path) for im, c in zip(images, checked, strict=True)]
        )
        rows, summary = _predict(d, images, inputs, batch_size, generate, prompt, max_new_tokens)
    for row, c in zip(rows, checked or [], strict=False):
        row.update(faces=c.faces, scored=c.scored, face_warning=c.warning)
    if checked is not None:
        summary["face_warnings"] = sum(c.warning is not None for c in checked)
    return rows, summary


def _predict(
    d: Detector, images, inputs, batch_size, generate, prompt, max_new_tokens
) -> tuple[list[dict], dict]:
    """predict's rows for ``images``, scoring ``inputs`` (the same images, or their face crops)."""
    p_fake = d.score([im.path for im in inputs], batch_size)  # finite, or RunError naming the weights
    input_size = model_input_size(d.processor)
    rows = []
    for im, p in zip(images, p_fake, strict=True):
        rows.append(
            {
                "path": im.path,
                "p_fake": float(p),
                "label": d.data.answer_fake if p >= d.threshold else d.data.answer_real,
                "threshold": d.threshold,
                "threshold_source": d.threshold_source,
                "width": im.width,
                "height": im.height,
                "mode": im.mode,
                "converted": im.converted,
                "warning": size_warning(im.width, im.height, input_size),
                "skipped": None,
            }
        )
    summary: dict = {"n": len(rows), "fake": sum(r["label"] == d.data.answer_fake for r in rows)}
    if generate:
        texts = generate_answers(d, inputs, prompt, max_new_tokens, batch_size)
        for row, text in zip(rows, texts, strict=True):
            parsed = parse_answer(text, d.data.answer_real, d.data.answer_fake)
            row.update(answer=text, answer_parsed=parsed or "unparseable")
            row["answer_agrees"] = None if parsed is None else parsed == row["label"]
        parsed_rows = [r for r in rows if r["answer_parsed"] != "unparseable"]
        summary["unparseable_rate"] = 1 - len(parsed_rows) / len(rows)
        summary["disagreement_rate"] = (
            sum(not r["answer_agrees"] for r in parsed_rows) / len(parsed_rows) if parsed_rows else math.nan
        )
    return rows, summary


# ---- output ---------------------------------------------------------------------------------
def skipped_row(path: str, reason: str, columns: list[str]) -> dict:
    """The output row of a file that was not scored: the scored rows' columns, empty but path and reason."""
    return {**dict.fromkeys(columns), "path": path, "skipped": reason}


def write_rows(rows: list[dict], path: Path) -> None:
    """CSV or JSONL by suffix, written to a temporary name and renamed: never a half-written file."""
    if path.suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    write_text(path, text)


def format_table(rows: list[dict]) -> str:
    lines = [f"{'P(fake)':>8}  {'label':<6} {'size':>9}  path"]
    for r in rows:
        if r["skipped"]:
            lines.append(f"{'-':>8}  {'-':<6} {'-':>9}  {r['path']}  [skipped: {r['skipped']}]")
            continue
        size = f"{r['width']}x{r['height']}"
        extra = f"  [{r['mode']} -> RGB]" if r["converted"] else ""
        extra += f"  [warning: {r['warning']}]" if r["warning"] else ""
        lines.append(f"{r['p_fake']:8.4f}  {r['label']:<6} {size:>9}  {r['path']}{extra}")
        if "answer" in r:
            lines.append(f"{'':8}  answer ({r['answer_parsed']}): {r['answer']!r}")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str]) -> list[dict]:
    return run(parse(argv))


def run(args: PredictArguments) -> list[dict]:
    """Score ``args`` (parsed and checked by llava_df.apps.predict_flags.parse)."""
    output = Path(args.output) if args.output else None
    paths, notes = args.paths, args.notes
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    images, skipped = read_images(paths)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not images:
        raise UsageError(
            f"none of the {len(skipped)} images could be read (named above). Pass intact images (any format PIL reads)."
        )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    threads, why = (
        use_chosen_threads() if not torch.cuda.is_available() else (torch.get_num_threads(), "CUDA")
    )
    if args.generate:
        check_generate(args.run_dir, args.weights)
    detector = load_detector(
        args.run_dir, model_dir=args.model_dir, weights=args.weights, threshold=args.threshold,
        allow_base_mismatch=args.allow_base_mismatch,
    )  # fmt: skip
    faces = make_face_check(args.face_crop, detector.data)
    if faces is not None:
        print(faces.describe(), file=sys.stderr)
    started = time.perf_counter()
    scored, summary = predict(
        detector, images, batch_size=args.batch_size, generate=args.generate, prompt=args.prompt,
        max_new_tokens=args.max_new_tokens, face_check=faces,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    print(f"scored {len(images)} images in {seconds:.2f} s ({len(images) / seconds:.1f} images/s) with {threads} "
          f"CPU threads ({why})", file=sys.stderr)  # fmt: skip
    # One row per input file, in input order: the skipped ones too, with their reason.
    rows = {r["path"]: r for r in scored}
    rows.update((path, skipped_row(path, reason, list(scored[0]))) for path, reason in skipped)
    rows = [rows[p] for p in paths]
    print(format_table(rows), flush=True)
    for row in scored:
        if row["warning"]:
            print(f"warning {row['path']}: {row['warning']}", file=sys.stderr)
        if row.get("face_warning"):
            print(f"warning {row['path']}: {row['face_warning']}", file=sys.stderr)
    line = f"{summary['n']} images, {summary['fake']} labelled {detector.data.answer_fake} at threshold "
    line += f"{detector.threshold:.4f} ({detector.threshold_source})"
    if skipped:
        line += f"; {len(skipped)} unreadable, skipped"
    if warned := sum(bool(r["warning"]) for r in scored):
        line += f"; {warned} with a size warning"
    if summary.get("face_warnings"):
        line += f"; {summary['face_warnings']} with no face or several faces"
    if args.generate:
        rate = summary["disagreement_rate"]
        line += f"; generated answers: {summary['unparseable_rate']:.0%} unparseable, " + (
            f"{rate:.0%} of the parsed ones disagree with the score" if math.isfinite(rate) else "none parsed"
        )
    print(line, file=sys.stderr)
    if output is not None:
        try:
            write_rows(rows, output)
        except OSError as err:  # checked before scoring; the folder changed since (removed, disk full)
            raise RunError(
                f"could not write --output {output} ({err.strerror}); every row is printed above. Free the space "
                "or pass another --output."
            ) from None
        print(f"wrote {output}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
