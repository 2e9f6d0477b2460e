#!/usr/bin/env bash
# Protocol v3's study, resumable by cell across working sessions (protocols/confirmatory_v3.md, "Resumable by cell").
#
#   tools/study_v3.sh start grid|study|heads   run the next part in the background, from a clean worktree pinned at
#                                              the commit that added protocols/confirmatory_v3.md
#   tools/study_v3.sh status                   what the running part is doing, and its cells
#   tools/study_v3.sh collect                  copy finished records and stage-1 files into this checkout's results/
#   tools/study_v3.sh stop                     stop the running part (a cell in flight is lost; its rerun starts over)
#
# Why a worktree: every run of the study must come from one commit and a clean tree (protocol one_commit: the
# records' env.git), while this checkout moves on. results/ and outputs/ do not make a tree dirty
# (provenance.git_state, .gitignore); the log and pid file live outside the worktree, which they would dirty.
# Why stage-1 files are committed: a cell's key hashes its stage-1 file's bytes, so a later session must start from
# the same files, not retrain them, or every finished cell would read as out of date and run again.
set -euo pipefail
MAIN=$(cd "$(dirname "$0")/.." && pwd)
COMMIT=${STUDY_COMMIT:-$(git -C "$MAIN" log --diff-filter=A --format=%H -1 -- protocols/confirmatory_v3.md)}
TREE=$(realpath -m "${STUDY_TREE:-$(dirname "$MAIN")/study-v3}")
LOGS=${STUDY_LOGS:-$(dirname "$MAIN")/study-v3-logs}
PY=${PYTHON:-$MAIN/.venv/bin/python}
DIRS="lr_grid_v3 confirmatory_v3 head_v3"   # results/<dir>; the grid's runs in outputs/lr_grid_v3, the rest in confirmatory_v3
PROJECTORS=mlp2x_gelu,kan_h36_g5_k3,kan_h64_g5_k3,bottleneck_h64_silu,bottleneck_h64_rational
RECIPE=llava_df/configs/confirmatory_v3.yaml
CHOICE=results/lr_grid_v3/lr_grid/lr_choice.json
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

die() { echo "error: $*" >&2; exit 2; }
[ -n "$COMMIT" ] || die "no commit adds protocols/confirmatory_v3.md in $MAIN: the study runs only once its protocol is committed."

running() { [ -f "$LOGS/pid" ] && kill -0 -- -"$(cat "$LOGS/pid")" 2>/dev/null; }   # any process of the part's group

preflight() {  # before anything is touched: nothing running, the study's machine type, the study's packages
    ! running || die "a part is running (process group $(cat "$LOGS/pid"), log $LOGS/current.log): wait for it or stop it."
    # the study's one machine type (protocol's machine, Amendment 2): another VM type, even another "Xeon", is not it
    want=$(cd "$MAIN" && "$PY" -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['machine'])" protocols/confirmatory_v3.yaml) \
        || die "cannot read machine from $MAIN/protocols/confirmatory_v3.yaml with $PY: set PYTHON to the study's venv."
    here=$(cd "$MAIN" && "$PY" -c "from llava_df.cpu_info import cpu_model; print(cpu_model())") \
        || die "cannot read this CPU's model with $PY: set PYTHON to a venv with llava_df installed."
    [ "$here" = "$want" ] || die "this machine is '$here', the study's is '$want' (protocols/confirmatory_v3.yaml, machine): its runs would not be one study. Run the study on that VM type; do other work here."
    # the packages a cell's key hashes must be the study's (its committed records'): another version reruns every cell
    "$PY" - "$MAIN/results" <<'PY' || die "this venv's packages are not the study's (above): install requirements/lock.txt's versions."
import json, sys
from importlib.metadata import version
from pathlib import Path
keys = ("torch", "transformers", "peft", "bitsandbytes")
here = {k: version(k) for k in keys}
for d in ("lr_grid_v3", "confirmatory_v3", "head_v3"):
    for path in sorted((Path(sys.argv[1]) / d).glob("**/runs/*.json")):
        recorded = (json.loads(path.read_text()).get("env") or {}).get("packages") or {}
        if any(recorded.get(k) != here[k] for k in keys):
            sys.exit(f"{path}: {[recorded.get(k) for k in keys]}; here: {[here[k] for k in keys]}")
PY
}

worktree() {  # the pinned, clean worktree, with the study's records and stage-1 files of this checkout
    git -C "$MAIN" worktree prune   # a worktree folder removed with the session leaves its registration behind
    [ -d "$TREE" ] || git -C "$MAIN" worktree add --detach "$TREE" "$COMMIT" >/dev/null
    [ "$(git -C "$TREE" rev-parse HEAD)" = "$COMMIT" ] || die "$TREE is at $(git -C "$TREE" rev-parse --short HEAD), not the protocol's ${COMMIT:0:7}: remove it (git worktree remove $TREE) and start again."
    dirty=$(git -C "$TREE" status --porcelain -- . ':(exclude)results')
    [ -z "$dirty" ] || die "$TREE is not clean ($dirty): its records would say dirty. Move those files out of it."
    for d in $DIRS; do
        [ -d "$MAIN/results/$d" ] || continue
        mkdir -p "$TREE/results/$d" && cp -au "$MAIN/results/$d/." "$TREE/results/$d/"   # -u: never over a newer one
        out=$([ "$d" = lr_grid_v3 ] && echo lr_grid_v3 || echo confirmatory_v3)
        [ -d "$MAIN/results/$d/stage1" ] && mkdir -p "$TREE/outputs/$out/stage1" \
            && cp -au "$MAIN/results/$d/stage1/." "$TREE/outputs/$out/stage1/"
    done
    where=$(cd "$TREE" && "$PY" -c "import llava_df; print(llava_df.__file__)")
    case "$where" in "$TREE"/*) ;; *) die "python in $TREE imports llava_df from $where, not the worktree: run with a venv whose llava_df is not shadowing it (PYTHON=...)." ;; esac
}

launch() {  # $1: name; the rest: the command, run in the worktree, in its own process group
    mkdir -p "$LOGS" && rm -f "$LOGS/pid"
    name=$1; shift
    # the part leads its own process group, whose id (= its pid, written from inside) stop kills as a whole
    (cd "$TREE" && setsid bash -c 'echo $$ >"$0"; exec nohup "$@"' "$LOGS/pid" "$@" >"$LOGS/$name.log" 2>&1 &)
    for _ in 1 2 3 4 5 6 7 8 9 10; do [ -s "$LOGS/pid" ] && break; sleep 0.5; done
    ln -sf "$LOGS/$name.log" "$LOGS/current.log"
    echo "started $name (pid $(cat "$LOGS/pid")) at ${COMMIT:0:7} in $TREE; log $LOGS/$name.log"
}

committed() {  # the file is committed in this checkout as the worktree has it (the study reads it from there)
    git -C "$MAIN" ls-files --error-unmatch "$1" >/dev/null 2>&1 && git -C "$MAIN" diff --quiet HEAD -- "$1" \
        && cmp -s "$MAIN/$1" "$TREE/$1" || die "$1 is not committed as the study reads it: the grid comes first (start grid), then commit its choice."
}

compare() { echo "$PY" -m llava_df compare --recipe "$RECIPE" --projectors "${ONLY:-$PROJECTORS}" --stage1 --stage1_per_seed True --workers 2 "$@"; }

case "${1:-}" in
start)
    preflight
    worktree
    case "${2:-}" in
    grid) launch grid $(compare --synthetic_seed 0 --seeds 0 --lr_grid 2e-4,6e-4 --skip_probes \
              --results_dir results/lr_grid_v3 --runs_dir outputs/lr_grid_v3) ;;
    study) committed "$CHOICE"
           launch study $(compare --synthetic_seed 20261206 --seeds 0,1,2 --lr_choice "$CHOICE" \
              --protocol protocols/confirmatory_v3.yaml --results_dir results/confirmatory_v3 --runs_dir outputs/confirmatory_v3) ;;
    heads) committed "$CHOICE"
           # the classifier head of mlp2x_gelu per strategy at the generative cell's chosen rate, from the study's own
           # stage-1 files (sweep.heads pairs only runs that started from the same bytes), in its own runs folder (a
           # cell's folder is named without its head: the study's would be overwritten); the study's captions file
           # makes the copied stage-1 files' keys match, so they are reused, not retrained
           ls "$TREE"/outputs/confirmatory_v3/stage1/mlp2x_gelu__seed*/stage1_key.txt >/dev/null 2>&1 \
               || die "no stage-1 file of the study in $TREE/outputs/confirmatory_v3/stage1: the study comes first (start study)."
           mkdir -p "$TREE/outputs/head_v3/stage1"
           cp -au "$TREE"/outputs/confirmatory_v3/stage1/mlp2x_gelu__seed* "$TREE/outputs/head_v3/stage1/"
           script="set -e"
           for s in projector_only lora unfreeze_early; do
               rate=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['choices']['mlp2x_gelu/$s'])" "$TREE/$CHOICE")
               script="$script; $(ONLY=mlp2x_gelu compare --synthetic_seed 20261206 --seeds 0,1,2 --strategies $s \
                   --learning_rate "$rate" --answer_head classifier --no_zero_shot --skip_probes \
                   --stage1_data outputs/confirmatory_v3/stage1/captions_112px/captions.json \
                   --results_dir results/head_v3 --runs_dir outputs/head_v3)"
           done
           launch heads bash -c "$script" ;;
    *) die "start ${2:-}: expected grid, study or heads." ;;
    esac ;;
status)
    running && echo "running: process group $(cat "$LOGS/pid")" || echo "not running"
    # progress only: the per-cell test AUCs the log holds are not read before the study is complete
    [ -e "$LOGS/current.log" ] && tr '\r' '\n' <"$LOGS/current.log" | grep -oE '^[a-z]+: +[0-9]+%[^[]*\[[^]]*\]|runs to do.*|[0-9]+ runs in [0-9]+ s' | tail -3 || true ;;
collect)
    for d in $DIRS; do
        [ -d "$TREE/results/$d" ] || continue
        # whole files only: a record being written is a hidden temporary until its rename (llava_df.io.write_text)
        mkdir -p "$MAIN/results/$d" && (cd "$TREE/results/$d" && find . -type f ! -name '.*' -print0 | xargs -0 -r cp -au --parents -t "$MAIN/results/$d/")
        out=$([ "$d" = lr_grid_v3 ] && echo lr_grid_v3 || echo confirmatory_v3)
        [ "$d" = head_v3 ] && continue   # the heads start from copies of the study's stage-1 files
        for run in "$TREE/outputs/$out/stage1/"*__seed*; do
            # finished: the key is written after training, so it is newer than the run's log
            [ -f "$run/stage1_key.txt" ] && [ -f "$run/mm_projector.safetensors" ] && [ "$run/stage1_key.txt" -nt "$run.log" ] || continue
            mkdir -p "$MAIN/results/$d/stage1/$(basename "$run")"
            cp -a "$run/stage1_key.txt" "$run/mm_projector.safetensors" "$MAIN/results/$d/stage1/$(basename "$run")/"
        done
    done
    git -C "$MAIN" status --short -- results/ | head -40 ;;
stop)
    running && kill -- -"$(cat "$LOGS/pid")" && echo "stopped" || echo "not running" ;;
*) die "${1:-}: expected start grid|study|heads, status, collect or stop." ;;
esac
