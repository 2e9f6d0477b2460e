# Shared by scripts/finetune_stage2_*_lowvram.sh (sourced, not run): picks the config, maps the
# MODEL_NAME_OR_PATH / DATA_DIR / OUTPUT_DIR environment variables to flags, appends "$@"
# (flags given to the script win over the config), and runs python -m llava_df.train.
#   TINY_CONFIG  config used when MODEL_NAME_OR_PATH is unset (tiny preset, synthetic data, CPU)
#   REAL_CONFIG  config used when MODEL_NAME_OR_PATH is set (llava-1.5-7b tier preset)
#   CONFIG       overrides both; PYTHON picks the interpreter; LLAVA_DF_DRY_RUN=1 prints the command only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n "${MODEL_NAME_OR_PATH:-}" ]]; then
  config=${CONFIG:-$REAL_CONFIG}
else
  config=${CONFIG:-$TINY_CONFIG}
  # The tiny preset's matmuls are far too small for several threads: on a busy 2-core machine
  # two OpenMP threads spin against each other and a step runs ~100x slower than with one.
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
output_dir=${OUTPUT_DIR:-outputs/$(basename "$config" .yaml)-$(date +%Y%m%d-%H%M%S)}

cmd=("${PYTHON:-python}" -m llava_df.train --config "$config" --output_dir "$output_dir")
if [[ -n "${MODEL_NAME_OR_PATH:-}" ]]; then cmd+=(--model_name_or_path "$MODEL_NAME_OR_PATH"); fi
if [[ -n "${DATA_DIR:-}" ]]; then cmd+=(--data_dir "$DATA_DIR"); fi
cmd+=("$@")

if [[ "${LLAVA_DF_DRY_RUN:-0}" == 1 ]]; then
  printf '%s\n' "${cmd[@]}"
  exit 0
fi
echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"
