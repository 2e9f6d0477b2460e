"""The trained detector as one object, loaded and saved the way Hugging Face models are.

How to call::

    detector = Detector.from_pretrained("outputs/run")               # a run folder: best/ (weights="final" too)
    detector = Detector.from_pretrained("outputs/run/checkpoint-40")  # any checkpoint of a run
    detector = Detector.from_pretrained("outputs/run-merged")         # a save_pretrained output (KAN included)
    p_fake = detector.score(["face.png", "other.jpg"])                # P(Fake) per image, training's scoring
    detector.label(p_fake)                                            # ["Fake", "Real"] at its threshold
    Detector.from_pretrained("outputs/run", bits=16).save_pretrained("outputs/run-merged")   # one checkpoint

predict, the demo, evaluate and merge all load through ``from_pretrained``: the run's processor,
prompt, template and image aspect ratio come with the weights, so every app preprocesses as
training did. The decision threshold is the run's ``threshold.json`` when it names these exact
weights (llava_df.eval.threshold), a given value, or none (``threshold=None``: evaluate chooses
its own on validation).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from llava_df.data.dataset import FaceDataset, Record
from llava_df.data.pipeline import load_data_settings
from llava_df.errors import RunError, UsageError
from llava_df.eval.scoring import score_dataset, scoring_trainer
from llava_df.eval.threshold import THRESHOLD_FILE, read_threshold
from llava_df.io import write_json
from llava_df.model.checkpoint import CHECKPOINT_JSON, load_trained, read_checkpoint, weights_identity
from llava_df.model.feature_cache import attach_existing
from llava_df.model.merged import load_merged, save_merged
from llava_df.model.processor import run_processor
from llava_df.spec.args import DataArguments
from llava_df.spec.ranges import check_threshold
from llava_df.spec.run_spec import known_fields
from llava_df.spec.training_args import TrainingArguments

logger = logging.getLogger(__name__)

DETECTOR_FILE = "llava_df_detector.json"  # a saved detector: what it needs besides the weights
SAVED = "saved"  # from_pretrained(threshold=SAVED): the run's threshold.json, which must exist
CLASSIFIER_NOT_MERGED = (
    "{where} was trained with --answer_head classifier: its 2-class head has no place in a plain LLaVA checkpoint, "
    "so it is not merged. Use the run folder itself with predict, evaluate and the demo."
)
SAVED_IF_ANY = "saved_if_any"
TRAINED_PARTS = (
    "lora_",
    "multi_modal_projector",
    "answer_head",
)  # parameter names of what a run trains  # the run's threshold.json when it names these weights, else none (merge)


@dataclass
class Detector:
    model: torch.nn.Module
    processor: object  # the run's processor, --image_aspect_ratio applied
    collator: object
    data: DataArguments  # prompt, template, answers, aspect ratio: the run's
    model_max_length: int
    fake_id: int
    real_id: int
    threshold: float | None
    threshold_source: str | None  # where the threshold came from, shown beside every label
    threshold_rule: str | None = None  # eer / youden / fixed:p when it is the run's (threshold.json)
    weights: dict = field(
        default_factory=dict
    )  # {"step", "sha256"} of the trained weights (threshold.json names them)
    info: dict = field(default_factory=dict)  # run name, projector, strategy, weights: shown by the demo
    bits: int = 16

    # ---- loading ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        weights: str = "best",
        threshold: float | str | None = SAVED,
        bits: int | None = None,
        torch_dtype: torch.dtype | None = None,
        device_map=None,
        allow_base_mismatch: bool = False,
    ) -> Detector:
        """Load a run folder (its ``weights``: best or final), one of its checkpoints, or a saved detector.

        ``threshold``: SAVED (the run's threshold.json for these weights; RunError before any weight
        loads when it is missing or belongs to other weights), a probability, or None. ``bits``: load
        the base at other precision than trained (16 to save a merged checkpoint).
        """
        folder = Path(path)
        if not folder.is_dir():
            raise RunError(
                f"{folder}: no such folder. Pass a run's --output_dir, a checkpoint or a saved detector."
            )
        if isinstance(threshold, int | float) and not isinstance(threshold, bool):
            check_threshold(threshold)
        if (folder / DETECTOR_FILE).is_file():
            return cls._from_saved(folder, threshold, torch_dtype, device_map)
        return cls._from_run(folder, weights, threshold, bits, torch_dtype, device_map, allow_base_mismatch)

    @classmethod
    def _from_run(
        cls, folder, weights, threshold, bits, torch_dtype, device_map, allow_base_mismatch
    ) -> Detector:
        ckpt, run_dir = _checkpoint_of(folder, weights)
        meta = read_checkpoint(ckpt)
        settings = meta.get("run_config") or _run_config(run_dir)
        data, model_max_length = _data_settings(settings, ckpt)
        identity = weights_identity(ckpt)
        chosen = _threshold(threshold, run_dir, ckpt.name, identity)  # before any weight loads
        model, processor = load_trained(
            ckpt, bits=bits, torch_dtype=torch_dtype, device_map=device_map, is_trainable=True,
            allow_base_mismatch=allow_base_mismatch,
        )  # fmt: skip
        model.requires_grad_(False)
        info = {
            "run": run_dir.name if run_dir else ckpt.name,
            "projector": settings.get("model", {}).get("mm_projector_type"),
            "strategy": meta.get("strategy") or settings.get("strategy"),
            "weights": ckpt.name,
            "answer_head": meta["model_args"].get("answer_head", "generate"),
        }
        loaded_bits = int(bits if bits is not None else meta["model_args"].get("bits", 16))
        return cls._assemble(model, processor, data, model_max_length, chosen, identity, info, loaded_bits)

    @classmethod
    def _from_saved(cls, folder: Path, threshold, torch_dtype, device_map) -> Detector:
        try:
            spec = json.loads((folder / DETECTOR_FILE).read_text())
            data = DataArguments(**known_fields(DataArguments, spec["data"]))
            model_max_length, info = int(spec["model_max_length"]), dict(spec["info"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RunError(f"{folder / DETECTOR_FILE} is unreadable ({type(err).__name__}: {err}).") from None
        identity = spec.get("weights") or {}  # the trained weights merged in
        chosen = _threshold(threshold, folder, None, identity)
        model, processor = load_merged(folder, torch_dtype=torch_dtype, device_map=device_map)
        return cls._assemble(model, processor, data, model_max_length, chosen, identity, info, 16)

    @classmethod
    def _assemble(cls, model, processor, data, model_max_length, chosen, identity, info, bits) -> Detector:
        if data.task == "caption":
            raise RunError(
                "a caption run (stage 1) aligns a projector and does not score faces; pass a detector run."
            )
        processor, _ = run_processor(None, data, processor)
        answer_head = info.get("answer_head", "generate")  # classifier: labels on the first answer token only
        collator, fake_id, real_id = load_data_settings(data, processor, model_max_length, answer_head)
        attach_existing(model)  # images a training run already cached skip the frozen tower
        value, source, rule = chosen
        return cls(
            model.eval(), processor, collator, data, model_max_length, fake_id, real_id, value, source, rule,
            identity, info, bits,
        )  # fmt: skip

    # ---- using ------------------------------------------------------------------------------
    def score(self, paths: list[str | os.PathLike], batch_size: int = 8) -> np.ndarray:
        """P(Fake) per image file, through the Trainer scoring that training's evaluation uses. Never NaN:
        a non-finite score raises RunError saying what in the weights produced it."""
        # is_fake is a placeholder: the score is read at the answer position, before the answer token.
        records = [Record(id=str(p), is_fake=0, manipulation="unknown", path=str(p)) for p in paths]
        with scoring_trainer(self.model, self.collator, self.fake_id, self.real_id, batch_size) as trainer:
            preds, _ = score_dataset(trainer, FaceDataset(records, name="predict"))
        p_fake = preds[:, 0]
        if not np.isfinite(p_fake).all():
            bad = [str(p) for p, v in zip(paths, p_fake, strict=True) if not np.isfinite(v)]
            raise RunError(
                f"{len(bad)} of {len(p_fake)} images got a non-finite P(Fake) (e.g. {bad[0]}): {self._weights_diagnosis()}"
            )
        return p_fake

    def _weights_diagnosis(self) -> str:
        """What in the trained weights makes the answer logits overflow (every file was checked finite on load)."""
        largest, where = 0.0, None
        for name, param in self.model.named_parameters():
            if any(part in name for part in TRAINED_PARTS) and param.is_floating_point() and param.numel():
                value = float(param.detach().abs().max())
                if value > largest:
                    largest, where = value, name
        weights = self.info.get("weights", "the weights")
        return (
            f"the answer logits overflow. The trained weights ({weights}) are finite, the largest |value| {largest:.3g} "
            f"in {where}: far beyond what training writes (LoRA and projector weights stay within ~10), so they are "
            "damaged or come from a diverged run. Use another checkpoint of the run (--weights final or a "
            "checkpoint-N folder); a run whose every checkpoint does this diverged: retrain with a lower learning rate."
            if largest > 1e3
            else f"the answer logits overflow although the trained weights ({weights}) look sane (largest |value| "
            f"{largest:.3g} in {where}): the images or the base model give non-finite values. Try --bits 16 or another "
            "checkpoint, and check the images load as expected."
        )

    def label(self, p_fake) -> list[str]:
        if self.threshold is None:
            raise UsageError(
                "this detector was loaded without a threshold; pass threshold=P (a cut on P(Fake))."
            )
        return [
            self.data.answer_fake if p >= self.threshold else self.data.answer_real
            for p in np.atleast_1d(p_fake)
        ]

    # ---- saving -----------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """One standalone checkpoint in ``out_dir`` (LoRA folded into the base, the projector kept as is, the
        processor, DETECTOR_FILE and the threshold chosen for these weights); ``from_pretrained`` reads it back."""
        if self.info.get("answer_head") == "classifier":
            raise UsageError(CLASSIFIER_NOT_MERGED.format(where=f"run {self.info.get('run')}"))
        if self.bits < 16:
            raise UsageError(
                f"this detector's base is held in {self.bits} bits; LoRA folds into 16-bit weights only. Load it "
                "with Detector.from_pretrained(path, bits=16) (what `llava-df merge` does) and save that."
            )
        out = Path(out_dir)
        load_with = save_merged(
            self.model, self.processor, out, extra_config={"llava_df_merged_from": dict(self.info)}
        )
        write_json(
            out / DETECTOR_FILE,
            {"weights": self.weights, "data": dataclasses.asdict(self.data), "model_max_length": self.model_max_length,
             "info": self.info | {"weights": f"merged from {self.info.get('weights')}/"}, "load_with": load_with},
        )  # fmt: skip
        if self.threshold_rule is not None:  # the run's own threshold, chosen for these weights
            write_json(
                out / THRESHOLD_FILE,
                {"value": self.threshold, "rule": self.threshold_rule, "split": "val",
                 "weights": "merged", "step": self.weights.get("step"), "weights_sha256": self.weights.get("sha256")},
            )  # fmt: skip
        return out


# ---- helpers --------------------------------------------------------------------------------
def answer_head_of_run(path: str | os.PathLike, weights: str = "best") -> str:
    """The --answer_head the weights ``from_pretrained(path, weights=weights)`` would load were trained with,
    read from the checkpoint json alone (no weights), so a verb can refuse what a classifier head cannot do
    first. A folder that is not a run is left to from_pretrained's own error; a merged detector answers generatively."""
    folder = Path(path)
    if not folder.is_dir() or (folder / DETECTOR_FILE).is_file():
        return "generate"
    ckpt, _ = _checkpoint_of(folder, weights)
    return (read_checkpoint(ckpt).get("answer_head") or {}).get("kind", "generate")


def _checkpoint_of(folder: Path, weights: str) -> tuple[Path, Path | None]:
    """(the llava_df checkpoint folder, the run folder it belongs to or None)."""
    if (folder / CHECKPOINT_JSON).is_file():  # best/, final/ or checkpoint-N/ itself
        run = folder.parent if (folder.parent / "run_config.json").is_file() else None
        return folder, run
    if not any(
        (folder / name).is_file()
        for name in ("run_config.json", f"best/{CHECKPOINT_JSON}", f"final/{CHECKPOINT_JSON}")
    ):
        raise RunError(
            f"{folder} is not a llava_df run (no run_config.json, best/ or final/), checkpoint ({CHECKPOINT_JSON}) or "
            f"saved detector ({DETECTOR_FILE}). Pass a training run's --output_dir, one of its checkpoints, or a merge "
            "output."
        )
    if weights not in ("best", "final"):
        raise UsageError(f"weights {weights!r}: expected best or final (or pass a checkpoint folder itself).")
    ckpt = folder / weights
    if not (ckpt / CHECKPOINT_JSON).is_file():
        other = "final" if weights == "best" else "best"
        hint = f" Try --weights {other}." if (folder / other / CHECKPOINT_JSON).is_file() else ""
        raise RunError(
            f"{folder} has no trained weights in {weights}/ ({CHECKPOINT_JSON}).{hint} A run writes them when training "
            "ends; an interrupted run can be resumed with --resume_from_checkpoint last."
        )
    return ckpt, folder


def _run_config(run_dir: Path | None) -> dict:
    if run_dir is None or not (run_dir / "run_config.json").is_file():
        return {}
    try:
        return json.loads((run_dir / "run_config.json").read_text())
    except ValueError as err:
        raise RunError(
            f"{run_dir / 'run_config.json'} is unreadable ({err}); re-run training or restore it."
        ) from None


def _data_settings(settings: dict, ckpt: Path) -> tuple[DataArguments, int]:
    """The run's data arguments with the aspect ratio it used, and its --model_max_length."""
    if not settings:  # a checkpoint saved outside a training run records no run settings
        logger.warning(
            "%s records no run settings: scoring with the default prompt, template and answers", ckpt
        )
        settings = {"data": {}, "training": {"model_max_length": TrainingArguments.model_max_length}}
    try:
        data = dict(settings["data"])
        model_max_length = int(settings["training"]["model_max_length"])
    except (KeyError, TypeError) as err:
        raise RunError(f"{ckpt}: its run config lacks the data settings ({err}); re-run training.") from None
    if data.get("image_aspect_ratio") is None:  # "the checkpoint's own", as the run resolved it
        data["image_aspect_ratio"] = (settings.get("checks") or {}).get("image_aspect_ratio")
    return DataArguments(**known_fields(DataArguments, data)), model_max_length


def _threshold(threshold, folder: Path | None, weights: str | None, identity: dict) -> tuple:
    """(value, where it came from, the run's rule or None) for from_pretrained's ``threshold`` argument."""
    if threshold is None:
        return None, None, None
    if threshold not in (SAVED, SAVED_IF_ANY):
        return float(threshold), "--threshold", None
    try:
        if folder is None:
            raise RunError("a checkpoint outside its run folder has no threshold.json; pass a threshold.")
        saved = read_threshold(folder, weights, identity)
    except RunError as err:
        if threshold == SAVED:
            raise
        logger.warning("no threshold for these weights (%s); none is saved with them", err)
        return None, None, None
    return float(saved["value"]), f"{saved['rule']} on val ({folder / THRESHOLD_FILE})", saved["rule"]
