#!/usr/bin/env bash
# Stage-2 fine-tuning with the least memory: INT8 LLM frozen, only the projector trains
# (--tune_deepfake_mlp_adapter True; seeds/000 scheme C).
#
#   bash scripts/finetune_stage2_projector_only_lowvram.sh
#       no arguments: tiny preset + synthetic benchmark (configs/tiny_projector_only_lowvram.yaml), CPU, minutes.
#   MODEL_NAME_OR_PATH=llava-hf/llava-1.5-7b-hf DATA_DIR=/data/faces bash scripts/finetune_stage2_projector_only_lowvram.sh
#       configs/llava15_7b_under12gb_projector_only.yaml (under-12 GB tier); extra flags override it.
#
# Trade-offs: no LoRA and no unfrozen layer, so nothing of the LLM adapts: the frozen LLM has to
# read the projector's output as it is (the users' worry: "KAN output distribution may not match
# the LLM"). Memory is the INT8 weights + activations; gradient checkpointing still matters because
# the gradient reaches the projector through every LLM layer. --bits 4 saves ~3 GB more on a 7B.
TINY_CONFIG=configs/tiny_projector_only_lowvram.yaml
REAL_CONFIG=configs/llava15_7b_under12gb_projector_only.yaml
source "$(dirname "$0")/_run_train.sh"
