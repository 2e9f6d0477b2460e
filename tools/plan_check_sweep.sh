#!/usr/bin/env bash
# results/plan_check_sweep.md: the planner checked by the committed sweep's run records.
#     bash tools/plan_check_sweep.sh
set -euo pipefail
cd "$(dirname "$0")/.."
commit=$(python -c "import json; print(json.load(open('results/comparison/runs/mlp2x_gelu__lora__seed0.json'))['env']['git']['commit'][:7])")
{
    echo "# The planner checked by the committed sweep's runs"
    echo
    echo "Command: \`bash tools/plan_check_sweep.sh\` (\`llava-df plan --check results/comparison/runs\`), over the records of the"
    echo "sweep run at commit $commit (results/comparison/sweep.json; AMD EPYC, 2 cores, no GPU). On CPU the measured figure is"
    echo "the process's peak RSS (mostly the interpreter, libraries and allocator caches beside the tensors the plan counts),"
    echo "so no relative error is computed; on a GPU each run records torch.cuda.max_memory_allocated beside the plan"
    echo "(scripts/gpu_validate.sh runs three such runs at LLaVA-1.5-7B shape)."
    echo
    llava-df plan --check results/comparison/runs 2>/dev/null
} > results/plan_check_sweep.md
