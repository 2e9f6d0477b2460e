"""``python -m llava_df.predict``: is this face fake? P(Fake) for your own images from a trained detector.

How to call::

    python -m llava_df.predict --run_dir outputs/run face.jpg faces/ 'more/**/*.png' [--output predictions.csv]
    python -m llava_df.predict --run_dir outputs/run --weights final --threshold 0.4 faces/
    python -m llava_df.predict --model_dir outputs/run-merged faces/            # a `python -m llava_df.merge` output
    python -m llava_df.predict --run_dir outputs/run --generate --prompt "<image>\\nIs this face real or fake? Explain why." face.jpg

One row per image (a table on stdout; ``--output x.csv`` or ``x.jsonl`` for a file): path,
P(Fake) (the score ``evaluate`` uses: softmax over the first answer token of Real vs Fake), the
label at the threshold, the threshold and where it came from, the image's size and mode and
whether it was converted to RGB. ``--generate`` adds the model's free-text answer, parsed to
Real / Fake / unparseable, with how often parsing failed and how often the parsed answer
disagrees with the score.

The image pipeline is training's: the run's processor, prompt, template and
``--image_aspect_ratio``; batched through the same Trainer scoring as ``evaluate``. Unreadable
images are named and skipped; when none is left, nothing is written. The threshold is the
run's ``threshold.json`` (chosen on validation by ``--threshold_rule``) unless ``--threshold``.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import ArgumentParser, RunError, UsageError, cli_entry

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DETECTOR_FILE = "llava_df_detector.json"  # written by merge: what predict needs besides the weights


@dataclass
class ImageInput:
    """An image that decoded once (so it is readable); its pixels are read again per batch, as training
    reads its data, so a folder of large photos is never held in memory at once."""

    path: str
    width: int = 0
    height: int = 0
    mode: str = ""
    converted: bool = False  # not stored as 8-bit RGB: converted like training converts it (images.to_rgb)


@dataclass
class Detector:
    model: object
    processor: object
    collator: object
    data_args: object
    fake_id: int
    real_id: int
    threshold: float
    threshold_source: str
    info: dict = field(default_factory=dict)  # run name, projector, strategy, weights: shown by the demo


# ---- inputs ---------------------------------------------------------------------------------
def expand_inputs(items: list[str]) -> list[str]:
    """Files, folders (searched recursively) and globs -> image paths, in order, each once."""
    if not items:
        raise UsageError(
            "no images given: pass image files, folders or globs, e.g. face.jpg faces/ 'dir/*.png'."
        )
    out: list[str] = []
    for item in items:
        path = Path(item)
        if any(c in item for c in "*?["):
            found = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise UsageError(
                    f"{item!r} matches no file. Check the pattern (quote it so the shell does not expand it)."
                )
        elif path.is_dir():
            found = sorted(
                str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
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
    return list(dict.fromkeys(out))


def read_images(paths: list[str]) -> tuple[list[ImageInput], list[tuple[str, str]]]:
    """(readable images, skipped (path, reason)); decoding is training's (images.load_rgb)."""
    from .data.images import ImageLoadError, load_rgb

    good, skipped = [], []
    for path in paths:
        try:
            load_rgb(path)  # a full decode: truncated or corrupt files are caught here, not mid-batch
            with Image.open(path) as raw:
                mode, (w, h) = raw.mode, raw.size
        except ImageLoadError as err:
            skipped.append((path, err.reason))
            continue
        good.append(ImageInput(path, w, h, mode, converted=mode != "RGB"))
    return good, skipped


# ---- the detector ---------------------------------------------------------------------------
def _run_settings(run_dir: Path) -> dict:
    config_file = run_dir / "run_config.json"
    if not config_file.is_file():
        raise RunError(f"{run_dir} has no run_config.json: pass the --output_dir of a llava_df.train run.")
    try:
        return json.loads(config_file.read_text())
    except ValueError as err:
        raise RunError(f"{config_file} is unreadable ({err}); re-run training or restore it.") from None


def load_detector(
    run_dir: str | None = None,
    *,
    model_dir: str | None = None,
    weights: str = "best",
    threshold: float | None = None,
    allow_base_mismatch: bool = False,
) -> Detector:
    """The model, its processor and collator, the run's data settings and threshold."""
    from .config import DataArguments
    from .evaluate import load_data_settings
    from .threshold import check_threshold, read_threshold

    if (run_dir is None) == (model_dir is None):
        raise UsageError(
            "pass exactly one of --run_dir (a training run) and --model_dir (a merged checkpoint)."
        )
    if threshold is not None:
        check_threshold(threshold)
    folder = Path(run_dir or model_dir)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder. Pass a run's --output_dir or a merged checkpoint.")
    if run_dir is not None:
        settings = _run_settings(folder)
        ckpt = folder / weights
        if not (ckpt / "llava_df_checkpoint.json").is_file():
            other = "final" if weights == "best" else "best"
            hint = (
                f" Try --weights {other}." if (folder / other / "llava_df_checkpoint.json").is_file() else ""
            )
            raise RunError(
                f"{folder} has no trained weights in {weights}/ (llava_df_checkpoint.json).{hint} A run writes them "
                "when training ends; an interrupted run can be resumed with --resume_from_checkpoint last."
            )
        data, model_max_length = settings["data"], settings["training"]["model_max_length"]
        info = {
            "run": folder.name,
            "projector": settings["model"]["mm_projector_type"],
            "strategy": settings.get("strategy"),
            "weights": weights,
        }
    else:
        spec_file = folder / DETECTOR_FILE
        if not spec_file.is_file():
            raise RunError(
                f"{folder} has no {DETECTOR_FILE}: not a `python -m llava_df.merge` output of a detector run. Pass "
                "--run_dir with the training run instead."
            )
        spec = json.loads(spec_file.read_text())
        data, model_max_length, info = spec["data"], spec["model_max_length"], spec["info"]
    data_args = DataArguments(**data)
    if data_args.task == "caption":
        raise RunError(
            f"{folder} is a caption run (stage 1): it aligns a projector and does not score faces."
        )
    if threshold is None:
        saved = read_threshold(folder, weights if run_dir is not None else None)
        value, source = float(saved["value"]), f"{saved['rule']} on val ({folder / 'threshold.json'})"
    else:
        value, source = float(threshold), "--threshold"
    if run_dir is not None:
        from .checkpointing import load_trained

        model, processor = load_trained(
            folder / weights, is_trainable=True, allow_base_mismatch=allow_base_mismatch
        )
    else:
        from .modeling import load_merged

        model, processor = load_merged(folder)
    model.eval()
    collator, fake_id, real_id = load_data_settings(data_args, processor, model_max_length)
    return Detector(model, collator.processor, collator, data_args, fake_id, real_id, value, source, info)


# ---- scoring --------------------------------------------------------------------------------
def score_images(detector: Detector, images: list[ImageInput], batch_size: int = 8) -> np.ndarray:
    """P(Fake) per image, through the Trainer scoring that evaluate uses."""
    from .data.dataset import FaceDataset, Record
    from .evaluate import score_dataset, scoring_trainer

    # is_fake is a placeholder: the score is read at the answer position, before the answer token.
    records = [Record(id=im.path, is_fake=0, manipulation="unknown", path=im.path) for im in images]
    d = detector
    with scoring_trainer(d.model, d.collator, d.fake_id, d.real_id, batch_size) as trainer:
        preds, _ = score_dataset(trainer, FaceDataset(records, name="predict"))
    return preds[:, 0]


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
    from .data.conversation import get_template
    from .data.images import load_rgb

    d = detector
    template = get_template(d.data_args.conv_template)
    prefix, _ = template.build(prompt or d.data_args.prompt, "", "")
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
) -> tuple[list[dict], dict]:
    """(one row per image, a summary with the generation statistics)."""
    d = detector
    p_fake = score_images(d, images, batch_size)
    if not np.isfinite(p_fake).all():
        bad = [im.path for im, p in zip(images, p_fake, strict=True) if not math.isfinite(p)]
        raise RunError(
            f"{len(bad)} images got a non-finite P(Fake) (e.g. {bad[0]}): the model's answer logits overflowed. Use "
            "another checkpoint of the run (--weights), or retrain with a lower learning rate."
        )
    rows = []
    for im, p in zip(images, p_fake, strict=True):
        rows.append(
            {
                "path": im.path,
                "p_fake": float(p),
                "label": d.data_args.answer_fake if p >= d.threshold else d.data_args.answer_real,
                "threshold": d.threshold,
                "threshold_source": d.threshold_source,
                "width": im.width,
                "height": im.height,
                "mode": im.mode,
                "converted": im.converted,
            }
        )
    summary: dict = {"n": len(rows), "fake": sum(r["label"] == d.data_args.answer_fake for r in rows)}
    if generate:
        texts = generate_answers(d, images, prompt, max_new_tokens, batch_size)
        for row, text in zip(rows, texts, strict=True):
            parsed = parse_answer(text, d.data_args.answer_real, d.data_args.answer_fake)
            row.update(answer=text, answer_parsed=parsed or "unparseable")
            row["answer_agrees"] = None if parsed is None else parsed == row["label"]
        parsed_rows = [r for r in rows if r["answer_parsed"] != "unparseable"]
        summary["unparseable_rate"] = 1 - len(parsed_rows) / len(rows)
        summary["disagreement_rate"] = (
            sum(not r["answer_agrees"] for r in parsed_rows) / len(parsed_rows) if parsed_rows else math.nan
        )
    return rows, summary


# ---- output ---------------------------------------------------------------------------------
def write_rows(rows: list[dict], path: Path) -> None:
    """CSV or JSONL by suffix, written to a temporary name and renamed: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".csv":
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    else:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def format_table(rows: list[dict]) -> str:
    lines = [f"{'P(fake)':>8}  {'label':<6} {'size':>9}  path"]
    for r in rows:
        size = f"{r['width']}x{r['height']}"
        extra = f"  [{r['mode']} -> RGB]" if r["converted"] else ""
        lines.append(f"{r['p_fake']:8.4f}  {r['label']:<6} {size:>9}  {r['path']}{extra}")
        if "answer" in r:
            lines.append(f"{'':8}  answer ({r['answer_parsed']}): {r['answer']!r}")
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m llava_df.predict", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="*", help="Image files, folders (recursive) and globs.")
    parser.add_argument("--run_dir", help="A training run's --output_dir.")
    parser.add_argument("--model_dir", help="A `python -m llava_df.merge` output, instead of --run_dir.")
    parser.add_argument(
        "--weights", default="best", choices=("best", "final"), help="Which weights of the run."
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="Cut on P(Fake) (default: the run's threshold.json)."
    )
    parser.add_argument("--output", default=None, help="Also write the rows to this .csv or .jsonl file.")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--generate", action="store_true", help="Also generate the model's free-text answer.")
    parser.add_argument(
        "--prompt",
        default=None,
        help="The question for --generate (default: the run's prompt); must hold <image>.",
    )
    parser.add_argument("--max_new_tokens", type=int, default=48, help="Length limit of a generated answer.")
    parser.add_argument(
        "--allow_base_mismatch",
        action="store_true",
        help="Load the run's weights even onto another base revision.",
    )
    return parser


@cli_entry
def main(argv: list[str]) -> list[dict]:
    from .threshold import check_threshold

    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: expected an integer >= 1.")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens {args.max_new_tokens}: expected an integer >= 1.")
    if args.threshold is not None:
        check_threshold(args.threshold)
    if args.prompt is not None and args.prompt.count("<image>") != 1:
        raise UsageError(f"--prompt {args.prompt!r}: expected exactly one <image> (where the image goes).")
    output = Path(args.output) if args.output else None
    if output is not None:
        if output.suffix not in (".csv", ".jsonl"):
            raise UsageError(f"--output {output}: expected a .csv or .jsonl file name.")
        if not output.parent.is_dir():
            raise UsageError(f"--output {output}: folder {output.parent} does not exist; create it first.")
    images, skipped = read_images(expand_inputs(args.images))
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not images:
        raise UsageError(
            f"none of the {len(skipped)} images could be read (named above). Pass intact images (any format PIL reads)."
        )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    detector = load_detector(
        args.run_dir, model_dir=args.model_dir, weights=args.weights, threshold=args.threshold
    )
    rows, summary = predict(
        detector, images, batch_size=args.batch_size, generate=args.generate, prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    print(format_table(rows), flush=True)
    line = f"{summary['n']} images, {summary['fake']} labelled {detector.data_args.answer_fake} at threshold "
    line += f"{detector.threshold:.4f} ({detector.threshold_source})"
    if skipped:
        line += f"; {len(skipped)} unreadable, skipped"
    if args.generate:
        rate = summary["disagreement_rate"]
        line += f"; generated answers: {summary['unparseable_rate']:.0%} unparseable, " + (
            f"{rate:.0%} of the parsed ones disagree with the score" if math.isfinite(rate) else "none parsed"
        )
    print(line, file=sys.stderr)
    if output is not None:
        write_rows(rows, output)
        print(f"wrote {output}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
