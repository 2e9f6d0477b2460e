#!/usr/bin/env bash
# Stage-2 fine-tuning on a small GPU: INT8 LLM + LoRA (+ the projector) + 8-bit AdamW + gradient
# checkpointing + batch 1 with gradient accumulation. The users' first choice (seeds/000, scheme A).
#
#   bash scripts/finetune_stage2_lora_lowvram.sh
#       no arguments: the tiny preset on the synthetic benchmark (configs/tiny_lora_lowvram.yaml),
#       a few minutes on a 2-core CPU; prints test accuracy and AUC at the end.
#   MODEL_NAME_OR_PATH=llava-hf/llava-1.5-7b-hf DATA_DIR=/data/faces OUTPUT_DIR=outputs/lora_kan \
#       bash scripts/finetune_stage2_lora_lowvram.sh --mm_projector_type kan_h256_g5_k3
#       a real checkpoint and image folder with configs/llava15_7b_12-16gb_lora.yaml (12-16 GB tier);
#       any flag after the script name overrides the config (python -m llava_df.train --help).
#
# Trade-offs of the memory knobs in this recipe:
#   --bits 8               LLM.int8 weights: about half of bf16; int8 matmuls are slower than bf16 ones.
#                          --bits 4 (NF4) halves the weights again at some accuracy cost.
#   --lora_r 32            adapter parameters, their gradients and optimizer state grow linearly with r.
#   --gradient_checkpointing True
#                          recomputes each decoder layer in backward (~20-30% slower) instead of keeping its
#                          activations. With INT8 the default is use_reentrant=True: non-reentrant cannot free
#                          the input bitsandbytes keeps on its autograd ctx. Tiny preset, batch 4, peak live
#                          activations+grads: 18.1 MiB unchecked, 12.6 non-reentrant, 9.4 reentrant
#                          (python benchmarks/bench_gradient_checkpointing.py -> results/gradient_checkpointing.md).
#   --optim adamw_8bit     bitsandbytes 8-bit AdamW: 2 bytes of state per trained parameter instead of 8.
#   --per_device_train_batch_size 1 --gradient_accumulation_steps N
#                          activations of one sample; the effective batch stays N (more steps per update).
#   --model_max_length     LLaVA-1.5 puts 576 image tokens in every sample: 640 is the floor, not a knob.
# The measured peak memory of each run is in OUTPUT_DIR/results.json (and the final summary line).
TINY_CONFIG=configs/tiny_lora_lowvram.yaml
REAL_CONFIG=configs/llava15_7b_12-16gb_lora.yaml
source "$(dirname "$0")/_run_train.sh"
