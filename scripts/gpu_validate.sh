#!/usr/bin/env bash
# Real scale on one GPU, no network: one training step of LLaVA-1.5-7B-shaped models with random
# weights for each strategy x --bits {16,8,4} x checkpointing {off,on} (batch 1, 2048 tokens, LoRA
# r 32, 8-bit AdamW); peak allocated / reserved, device used memory and step time are appended to
# results/gpu_memory.csv with the machine and torch version. Then the KAN projector's GPU speed
# against mlp2x_gelu at LLaVA-1.5 shape (benchmarks/bench_kan.py). Then one real training run per
# strategy on that random checkpoint (`llava-df train`, INT8, bf16, checkpointing, 8-bit AdamW,
# batch 1, 4 steps, 336 px synthetic faces): each records its planned and measured peak in
# results.json, and `llava-df plan --check` prints them with the worst relative error
# (results/plan_check_gpu.md).
#
#     bash scripts/gpu_validate.sh            # needs CUDA; about 14 GB of disk in $TMPDIR for the random checkpoint
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device visible; this script measures GPU memory')"
python benchmarks/gpu_memory.py --shape llava15_7b --device cuda --out results/gpu_memory.csv "$@"
# The projector zoo at LLaVA-1.5 shape (1024 -> 4096, 2 images x 576 tokens), fwd+bwd time and saved bytes on the GPU.
python -m llava_df.projectors --in-dim 1024 --out-dim 4096 --bench --device cuda --dtype bfloat16 \
    --json results/projectors_gpu.json | tee results/projectors_gpu.md
# Every run checks the planner: one real run per strategy at LLaVA-1.5-7B shape, then plan --check.
CKPT="${TMPDIR:-/tmp}/random-llava15_7b"
RUNS="${TMPDIR:-/tmp}/llava_df_gpu_runs"
for strategy in projector_only lora unfreeze_early; do
    extra=()
    [ "$strategy" = unfreeze_early ] && extra=(--num_unfreeze_early_layers 2)
    llava-df train --model_name_or_path "$CKPT" --strategy "$strategy" "${extra[@]}" --bits 8 --bf16 True \
        --optim adamw_8bit --gradient_checkpointing True --per_device_train_batch_size 1 --synthetic_n 64 \
        --image_size 336 --max_steps 4 --logging_steps 1 --eval_strategy no --save_strategy no \
        --output_dir "$RUNS/$strategy" --overwrite_output_dir True
done
llava-df plan --check "$RUNS"/projector_only "$RUNS"/lora "$RUNS"/unfreeze_early | tee results/plan_check_gpu.md
