"""Save and load what trains: projector, LoRA adapter, unfrozen layers, and the config to rebuild the rest.

Interface::

    save_trainable(model, out_dir, record, step=None) -> Path    # record: CheckpointRecord
        # callable at every checkpoint (best/, final/, checkpoint-N/); never changes the model
    verify_checkpoint(ckpt_dir)       # WeightsError unless every listed file is there, whole and the one saved
    load_trained(run_dir, *, torch_dtype=None, device_map=None, bits=None, is_trainable=False)
        -> (model, processor)     # fresh base (same --bits unless overridden) + the saved weights, eval mode
    load_trainable_weights(model, ckpt_dir) -> model
        # into a model already built + strategy-applied (resuming): projector, unfrozen layers, LoRA
    find_checkpoint(run_dir) -> Path ; read_checkpoint(ckpt_dir) -> dict

A checkpoint folder holds::

    llava_df_checkpoint.json     model arguments (+ resolved strategy), projector name/dims, files, run_config
    mm_projector.safetensors     projector state dict (+ mm_projector.json: name, in/out dims, class)
    adapter_config.json          PEFT LoRA adapter (save_pretrained), lora / unfreeze_early only
    adapter_model.safetensors
    unfrozen_layers.safetensors  the first N decoder layers (unfreeze_early only), full parameter names
    answer_head.safetensors      the 2-class head (--answer_head classifier only); its token ids in the json
    llava_df_complete.json       written LAST: every file with its size, the trained weights with their SHA-256

A checkpoint is trusted only whole: a listed file that is missing or of another size (a crash while
best/ was rewritten, a deleted adapter that PEFT would silently replace by a fresh zero LoRA) or trained
weights whose bytes are not the ones recorded (a file copied in from another checkpoint, which would be
scored under this checkpoint's threshold) are refused before any weight loads (``verify_checkpoint``).

The frozen base is not saved: it is rebuilt from ``model_args`` (the checkpoint name, or the
``tiny`` preset, deterministic by seed), quantized the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import peft
import torch
import transformers
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from llava_df import io
from llava_df.errors import WeightsError
from llava_df.model.anatomy import decoder_layers, layers_path, unwrap
from llava_df.model.anatomy import projector as projector_of
from llava_df.model.answer_head import answer_head_of, install_answer_head
from llava_df.model.base_identity import check_base
from llava_df.model.build import PROJECTOR_JSON_KEY, build_model, load_projector_weights, projector_dims
from llava_df.model.compat import quiet_peft_checkpointing_probe
from llava_df.model.quantization import make_fp32_island
from llava_df.model.strategies import apply_strategy
from llava_df.spec.args import ModelArguments
from llava_df.spec.strategy import resolve_strategy

logger = logging.getLogger(__name__)

CHECKPOINT_JSON = "llava_df_checkpoint.json"
PROJECTOR_FILE = "mm_projector.safetensors"
PROJECTOR_JSON = "mm_projector.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILE = "adapter_model.safetensors"
UNFROZEN_FILE = "unfrozen_layers.safetensors"
ANSWER_HEAD_FILE = "answer_head.safetensors"
COMPLETE_MARKER = (
    "llava_df_complete.json"  # the completeness record, written last (llava_df.io.mark_complete)
)
TRAINED_FILES = (PROJECTOR_FILE, ADAPTER_FILE, UNFROZEN_FILE, ANSWER_HEAD_FILE)  # recorded with their SHA-256
# 1: llava_df_checkpoint.json only; 2: + the completeness record in every checkpoint folder (best/, final/ too)
FORMAT = 2


def _versions() -> dict:

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def _cpu_state(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors that share no storage.
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def _has_lora(model: nn.Module) -> bool:
    return any("lora_" in n for n, _ in model.named_parameters())


@dataclass(frozen=True)
class CheckpointRecord:
    """What a checkpoint records besides its weights, so the frozen base can be rebuilt under it."""

    model_args: dict  # dataclasses.asdict(ModelArguments): the base, the projector, --bits, LoRA settings
    strategy: str  # resolved by the spec; never derived again from the flags
    base: dict | None = None  # BuiltModel.base: the trained parts are never loaded onto another base
    run_config: dict = field(default_factory=dict)  # the run's spec (run_config.json), for merge and predict


def save_trainable(
    model: nn.Module,
    out_dir: str | os.PathLike,
    record: CheckpointRecord,
    step: int | None = None,
    *,
    complete: bool = True,
) -> Path:
    """Write the trained parts of ``model`` (see the module docstring) to ``out_dir``; return it.
    ``step``: the optimizer step of these weights (threshold.json names it). ``complete=False``: leave the
    completeness record to the caller, who adds more files first (the Trainer's checkpoint-N/)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # best/ is rewritten in place at each new best: without its record while that happens, so a crash
    # half-way leaves a folder that is refused, never one that mixes two steps' weights.
    (out / COMPLETE_MARKER).unlink(missing_ok=True)
    base = unwrap(model)
    args = dict(record.model_args)
    proj = projector_of(base)
    name = getattr(base.config, PROJECTOR_JSON_KEY, getattr(proj, "projector_name", None))
    files = [PROJECTOR_FILE, PROJECTOR_JSON]
    save_file(_cpu_state(proj), out / PROJECTOR_FILE)
    proj_info = {
        "name": name,
        "class": f"{type(proj).__module__}.{type(proj).__qualname__}",
        "in_dim": projector_dims(base.config)[0],
        "out_dim": projector_dims(base.config)[1],
        "num_parameters": sum(p.numel() for p in proj.parameters()),
    }
    (out / PROJECTOR_JSON).write_text(json.dumps(proj_info, indent=2))
    if _has_lora(model):
        model.save_pretrained(out)  # PEFT: adapter_config.json + adapter_model.safetensors (LoRA only)
        files += [ADAPTER_CONFIG, ADAPTER_FILE]
    n_unfrozen = args.get("num_unfreeze_early_layers", 0) if record.strategy == "unfreeze_early" else 0
    if n_unfrozen:
        prefix = layers_path(base)
        state: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(decoder_layers(base)[:n_unfrozen]):
            state.update(_cpu_state(layer, f"{prefix}.{i}."))
        save_file(state, out / UNFROZEN_FILE)
        files.append(UNFROZEN_FILE)
    head = answer_head_of(base)
    if head is not None:
        save_file(_cpu_state(head), out / ANSWER_HEAD_FILE)
        files.append(ANSWER_HEAD_FILE)
    meta = {
        "format": FORMAT,
        # What threshold.json names (llava_df.eval.threshold): these exact weights, so a threshold chosen for
        # another run's or another step's weights is refused instead of labelling with it.
        "weights": {"step": step, "sha256": files_sha256(out, files)},
        "model_args": args,
        "base": record.base,  # name + revision: never loaded onto another base
        "strategy": record.strategy,
        "projector": proj_info,
        "answer_head": None
        if head is None
        else {"kind": "classifier", "real_id": head.real_id, "fake_id": head.fake_id},
        "files": files,
        "versions": _versions(),
        "run_config": dict(record.run_config),
    }
    io.write_text(out / CHECKPOINT_JSON, json.dumps(meta, indent=2, default=str))
    io.follow_umask(out)  # safetensors writes 0600: run folders are shared too
    if complete:
        io.mark_complete(out, COMPLETE_MARKER, digest=lambda name: name in TRAINED_FILES)  # last
    return out


def files_sha256(folder: Path, names: list[str]) -> str:
    """One SHA-256 over the named files' names and bytes (the trained weights of a checkpoint)."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode() + b"\0")
        with open(Path(folder) / name, "rb") as f:
            while chunk := f.read(1 << 24):  # 16 MiB at a time: a 7B run's unfrozen layers are GBs
                h.update(chunk)
    return h.hexdigest()


def weights_identity(ckpt_dir: str | os.PathLike) -> dict:
    """{"step", "sha256"} of a checkpoint's trained weights, checked against the files themselves
    (verify_checkpoint); {} for checkpoints from before it was recorded."""
    verify_checkpoint(ckpt_dir)
    return dict(read_checkpoint(ckpt_dir).get("weights") or {})


def checkpoint_files_problem(ckpt_dir: str | os.PathLike) -> str | None:
    """Why the files of checkpoint ``ckpt_dir`` are not the ones it was saved with (None: they are)."""
    ckpt = Path(ckpt_dir)
    meta = read_checkpoint(ckpt)
    listed = [str(n) for n in meta.get("files") or []]
    if int(meta.get("format", 1)) >= 2:
        problem = io.completeness_problem(ckpt, COMPLETE_MARKER)
        if problem is not None:
            return problem
    missing = [n for n in listed if not (ckpt / n).is_file()]
    if missing:
        return f"{missing[0]} is missing (listed in {CHECKPOINT_JSON})"
    recorded = meta.get("weights") or {}
    if recorded.get("sha256"):
        actual = _files_sha256_once(ckpt, listed)
        if actual != recorded["sha256"]:
            return (
                f"its weight files hash to sha256 {actual[:12]}, not the {recorded['sha256'][:12]} that "
                f"{CHECKPOINT_JSON} records for step {recorded.get('step')}: they were replaced (e.g. copied in from "
                "another checkpoint) or rewritten after it was saved, so its step and threshold do not describe them"
            )
    return None


def verify_checkpoint(ckpt_dir: str | os.PathLike) -> None:
    """WeightsError naming the checkpoint, what is wrong and the run's intact checkpoints; see the module docstring."""
    ckpt = Path(ckpt_dir)
    problem = checkpoint_files_problem(ckpt)
    if problem is None:
        return
    run = ckpt.parent
    others = sorted(
        p.name
        for p in run.iterdir()
        if p.is_dir()
        and p != ckpt
        and (p / CHECKPOINT_JSON).is_file()
        and checkpoint_files_problem(p) is None
    )
    use = (
        f"use an intact checkpoint of this run ({', '.join(others)})"
        if others
        else "no other intact checkpoint is here"
    )
    raise WeightsError(
        f"{ckpt} cannot be trusted: {problem}. Nothing was loaded; {use}, or re-run training "
        "(--resume_from_checkpoint last continues an interrupted run)."
    )


_VERIFIED: dict[
    tuple, str
] = {}  # (folder, files' sizes and times) -> sha256: hash a checkpoint once per process


def _files_sha256_once(folder: Path, names: list[str]) -> str:
    stats = tuple((n, (folder / n).stat().st_size, (folder / n).stat().st_mtime_ns) for n in sorted(names))
    key = (str(folder.resolve()), stats)
    if key not in _VERIFIED:
        _VERIFIED[key] = files_sha256(folder, names)
    return _VERIFIED[key]


LLAVA_PREFIX = "model.mm_projector."  # the key prefix of LLaVA's stage-1 mm_projector.bin


def export_mm_projector(
    model: nn.Module, out_dir: str | os.PathLike, *, llava_bin: bool = False
) -> list[Path]:
    """Stage-1 output in LLaVA's layout: ``out_dir/mm_projector.safetensors`` (keys ``model.mm_projector.*``,
    the projector name in its metadata) and, with ``llava_bin``, LLaVA's ``mm_projector.bin`` (torch pickle).

    Either file is what ``--pretrain_mm_mlp_adapter`` reads, here and (mlp2x_gelu) in LLaVA itself.
    """
    out = Path(out_dir)
    base = unwrap(model)
    proj = projector_of(base)
    state = _cpu_state(proj, LLAVA_PREFIX)
    name = str(getattr(base.config, PROJECTOR_JSON_KEY, getattr(proj, "projector_name", "")))
    in_dim, out_dim = projector_dims(base.config)
    meta = {
        "mm_projector_type": name,
        "in_dim": str(in_dim),
        "out_dim": str(out_dim),
        "format": "llava_df stage 1",
    }
    written = [out / PROJECTOR_FILE]
    save_file(state, written[0], metadata=meta)
    if llava_bin:
        written.append(out / "mm_projector.bin")
        torch.save(state, written[1])
    for path in written:
        io.follow_umask(path)
    return written


def find_checkpoint(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` itself if it holds a checkpoint, else its ``best/`` then ``final/``."""
    run = Path(run_dir)
    for candidate in (run, run / "best", run / "final"):
        if (candidate / CHECKPOINT_JSON).is_file():
            if candidate != run:
                logger.info("using checkpoint %s", candidate)
            return candidate
    others = sorted(p.name for p in run.glob("*/") if (p / CHECKPOINT_JSON).is_file()) if run.is_dir() else []
    hint = f" Checkpoints found inside: {others}; pass one of them." if others else ""
    raise FileNotFoundError(
        f"No llava_df checkpoint at {run} ({CHECKPOINT_JSON} in it, in best/ or in final/).{hint}"
    )


def read_checkpoint(ckpt_dir: str | os.PathLike) -> dict:
    return json.loads((Path(ckpt_dir) / CHECKPOINT_JSON).read_text())


def model_args_from_checkpoint(ckpt_dir: str | os.PathLike, **overrides):
    """ModelArguments as saved (unknown keys from other versions are dropped with a warning), with
    ``overrides`` (e.g. bits=16 to merge). The projector comes from the checkpoint, so the original
    --pretrain_mm_mlp_adapter (which may be gone) is not read again."""
    saved = read_checkpoint(ckpt_dir)["model_args"]
    known = {f.name for f in dataclasses.fields(ModelArguments)}
    dropped = sorted(set(saved) - known)
    if dropped:
        logger.warning("ignoring unknown model arguments in %s: %s", ckpt_dir, dropped)
    values = {k: v for k, v in saved.items() if k in known} | {"pretrain_mm_mlp_adapter": None} | overrides
    return ModelArguments(**values)


def strategy_of(ckpt_dir: str | os.PathLike) -> str:
    """The strategy a checkpoint was trained with, as its spec resolved it."""
    meta = read_checkpoint(ckpt_dir)
    strategy = meta.get("strategy") or meta["model_args"].get("strategy")
    if strategy is None:  # written before the strategy was recorded: derive it as that run's spec did
        strategy = resolve_strategy(model_args_from_checkpoint(ckpt_dir))
    return strategy


def _load_unfrozen(base: nn.Module, path: Path) -> None:
    state = _read_weights(path)
    prefix = layers_path(base)
    depth = len(prefix.split("."))
    layers = decoder_layers(base)
    for index in sorted({int(k.split(".")[depth]) for k in state}):
        layer_state = {
            k.split(".", depth + 1)[-1]: v for k, v in state.items() if k.startswith(f"{prefix}.{index}.")
        }
        layer = layers[index]
        if next(iter(layer_state.values())).dtype == torch.float32:
            make_fp32_island(layer)  # it trained as one; keep its numerics at inference too
        missing, unexpected = layer.load_state_dict(layer_state, strict=False)
        if unexpected or [m for m in missing if "lora_" not in m]:
            raise ValueError(
                f"{path}: layer {index} does not fit: missing {missing}, unexpected {unexpected}."
            )


def _read_weights(path: Path) -> dict:
    """safetensors -> tensors, or WeightsError naming the file and the run's other checkpoints (a file that
    cannot be read, or one holding NaN/inf values: trained weights are finite, the NaN guard stops a run first)."""
    try:
        state = load_file(path)
    except Exception as exc:  # truncated, zero-filled, not safetensors
        state, error = None, f"cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
    else:
        bad = {k: int((~torch.isfinite(v)).sum()) for k, v in state.items() if v.is_floating_point()}
        bad = {k: n for k, n in bad.items() if n}
        if not bad:
            return state
        name, n = next(iter(bad.items()))
        error = (
            f"holds {sum(bad.values())} NaN/inf values in {len(bad)} of its {len(state)} tensors (e.g. {n} in {name}): "
            "trained weights are finite, so the file is damaged or was written by a diverged run"
        )
    run = path.parent.parent
    others = sorted(
        p.name for p in run.iterdir() if p.is_dir() and p != path.parent and (p / CHECKPOINT_JSON).is_file()
    )
    raise WeightsError(
        f"{path} {error}. Use another checkpoint of this run ({', '.join(others) or 'none found'}), e.g. "
        f"--resume_from_checkpoint {run / others[-1] if others else '<checkpoint>'} or --weights final/best."
    )


def load_trainable_weights(
    model: nn.Module, ckpt_dir: str | os.PathLike, *, adapter: bool = True
) -> nn.Module:
    """Load projector, unfrozen layers, the answer head and LoRA weights (unless ``adapter=False``) from ``ckpt_dir``.

    For resuming: ``model`` must be built and strategy-applied with the checkpoint's arguments.
    """
    ckpt = Path(ckpt_dir)
    verify_checkpoint(ckpt)
    base = unwrap(model)
    load_projector_weights(projector_of(base), ckpt / PROJECTOR_FILE)
    if (ckpt / UNFROZEN_FILE).is_file():
        _load_unfrozen(base, ckpt / UNFROZEN_FILE)
    _load_answer_head(base, ckpt)
    if adapter and (ckpt / ADAPTER_FILE).is_file():
        if not _has_lora(model):
            raise ValueError(
                f"{ckpt} holds a LoRA adapter but the model has none; apply the same strategy first."
            )
        result = set_peft_model_state_dict(model, _read_weights(ckpt / ADAPTER_FILE))
        if result.unexpected_keys:
            raise ValueError(f"{ckpt / ADAPTER_FILE}: keys the model lacks: {result.unexpected_keys[:5]}")
    return model


def _load_answer_head(base: nn.Module, ckpt: Path) -> None:
    head, saved = answer_head_of(base), (ckpt / ANSWER_HEAD_FILE).is_file()
    if head is None and not saved:
        return
    if head is None or not saved:
        has = "has" if saved else "has no"
        raise WeightsError(
            f"{ckpt} {has} a classifier answer head ({ANSWER_HEAD_FILE}) but the model was built "
            f"{'without' if saved else 'with'} one: load it with the checkpoint's own --answer_head."
        )
    head.load_state_dict(_read_weights(ckpt / ANSWER_HEAD_FILE))


def install_saved_answer_head(model: nn.Module, ckpt_dir: str | os.PathLike, args: ModelArguments) -> None:
    """--answer_head classifier: the head in place of lm_head, with the token ids it was trained on."""
    if args.answer_head != "classifier":
        return
    saved = read_checkpoint(ckpt_dir).get("answer_head") or {}
    if "real_id" not in saved or "fake_id" not in saved:
        raise WeightsError(
            f"{ckpt_dir}: --answer_head classifier, but {CHECKPOINT_JSON} names no answer token ids (answer_head). "
            "The checkpoint is incomplete: use another checkpoint of the run."
        )
    install_answer_head(model, saved["real_id"], saved["fake_id"])


def load_trained(
    run_dir: str | os.PathLike,
    *,
    torch_dtype: torch.dtype | None = None,
    device_map=None,
    bits: int | None = None,
    is_trainable: bool = False,
    allow_base_mismatch: bool = False,
):
    """(model, processor) rebuilt from a checkpoint: fresh base + saved projector/unfrozen layers/LoRA.

    ``bits`` overrides the saved ``--bits`` (e.g. 16 to merge); ``is_trainable=True`` re-applies
    the strategy so training can continue, otherwise the model is frozen and in eval mode.
    """
    ckpt = find_checkpoint(run_dir)
    verify_checkpoint(ckpt)  # before the base is built: a damaged checkpoint costs no load
    overrides = {} if bits is None else {"bits": bits}
    args = model_args_from_checkpoint(ckpt, **overrides)
    strategy = strategy_of(ckpt)
    built = build_model(args, strategy, torch_dtype=torch_dtype, device_map=device_map)
    check_base(read_checkpoint(ckpt).get("base"), built.base, str(ckpt), allow=allow_base_mismatch)
    model = built.model
    install_saved_answer_head(model, ckpt, args)
    if is_trainable:
        model = apply_strategy(model, args, strategy, verbose=False)
        return load_trainable_weights(model, ckpt), built.processor
    load_trainable_weights(model, ckpt, adapter=False)  # the adapter goes in through PEFT below
    if (ckpt / ADAPTER_FILE).is_file():
        _read_weights(ckpt / ADAPTER_FILE)  # PEFT reads it below; this refuses NaN/inf weights first
        with quiet_peft_checkpointing_probe():
            model = PeftModel.from_pretrained(model, ckpt, is_trainable=False)
    model.requires_grad_(False)
    return model.eval(), built.processor
