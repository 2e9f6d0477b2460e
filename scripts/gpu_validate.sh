#!/usr/bin/env bash
# Real scale on one GPU, no network: one training step of LLaVA-1.5-7B-shaped models with random
# weights for each strategy x --bits {16,8,4} x checkpointing {off,on} (batch 1, 2048 tokens, LoRA
# r 32, 8-bit AdamW); peak allocated / reserved, device used memory and step time are appended to
# results/gpu_memory.csv with the machine and torch version. Then the KAN projector's GPU speed
# against mlp2x_gelu at LLaVA-1.5 shape (benchmarks/bench_kan.py).
#
#     bash scripts/gpu_validate.sh            # needs CUDA; about 14 GB of disk in $TMPDIR for the random checkpoint
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device visible; this script measures GPU memory')"
python benchmarks/gpu_memory.py --shape llava15_7b --device cuda --out results/gpu_memory.csv "$@"
# The projector zoo at LLaVA-1.5 shape (1024 -> 4096, 2 images x 576 tokens), fwd+bwd time and saved bytes on the GPU.
python -m llava_df.projectors --in-dim 1024 --out-dim 4096 --bench --device cuda --dtype bfloat16 \
    --json results/projectors_gpu.json | tee results/projectors_gpu.md
