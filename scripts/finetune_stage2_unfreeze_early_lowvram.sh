#!/usr/bin/env bash
# Stage-2 fine-tuning with the first LLM layers fully trained (loaded unquantized), LoRA on the
# rest, INT8 elsewhere (--num_unfreeze_early_layers N --lora_enable True; seeds/000 scheme B).
#
#   bash scripts/finetune_stage2_unfreeze_early_lowvram.sh
#       no arguments: tiny preset + synthetic benchmark (configs/tiny_unfreeze_early_lowvram.yaml), CPU, minutes.
#   MODEL_NAME_OR_PATH=llava-hf/llava-1.5-7b-hf DATA_DIR=/data/faces bash scripts/finetune_stage2_unfreeze_early_lowvram.sh
#       configs/llava15_7b_16-24gb_unfreeze_early.yaml (16-24 GB tier); extra flags override it.
#
# Trade-offs: the early layers adapt directly to the projector's output (the users' reason for
# this scheme), but each unfrozen layer is loaded in full precision and trains with full
# gradients and optimizer state (on LLaVA-1.5-7B ~200M parameters per layer), and checkpoints
# carry those layers. Same checkpointing / 8-bit AdamW / batch-1 knobs as the LoRA script.
TINY_CONFIG=configs/tiny_unfreeze_early_lowvram.yaml
REAL_CONFIG=configs/llava15_7b_16-24gb_unfreeze_early.yaml
source "$(dirname "$0")/_run_train.sh"
