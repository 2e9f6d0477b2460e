"""The zero-shot row on the `smol` preset: the stage-1 model asked the detection question before any detection training.

    python benchmarks/smol_zero_shot.py                          # mlp2x_gelu, seed 0
    python benchmarks/smol_zero_shot.py --projectors mlp2x_gelu,kan_h64_g5_k3 --seeds 0,1

What ``llava-df compare --recipe llava_df/configs/sweep_smol.yaml --stage1 --stage1_per_seed True`` puts
beside its tables, for a few projectors and seeds without the stage-2 cells: stage 1 (LLaVA's caption
alignment, llava_df/configs/stage1_smol.yaml: 1000 synthetic captions at 112 px, one epoch, projector
only) per projector and seed, then llava_df.sweep.zeroshot on the sweep recipe's splits, in both
forms (the sweep's question with 'real' / 'fake', and 'Is this face fake? Answer yes or no.'). As a
control, the same scoring of the fresh projector (no stage 1). Writes results/smol/zero_shot.md and
results/smol/zero_shot.json, the command and the machine beside them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "llava_df" / "configs" / "sweep_smol.yaml"
OUT = ROOT / "results" / "smol"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projectors", default="mlp2x_gelu")
    parser.add_argument("--seeds", default="0")
    parser.add_argument(
        "--runs_dir", default=None, help="where the stage-1 runs go (default: a temporary folder)"
    )
    args = parser.parse_args()
    import torch

    from llava_df.provenance import cpu_model, git_state
    from llava_df.spec.resolve import parse_spec
    from llava_df.sweep.cells import Cell
    from llava_df.sweep.stage1 import run_stage1, stage1_recipe_for
    from llava_df.sweep.zeroshot import zero_shot_records

    torch.set_num_threads(1)
    command = "python benchmarks/smol_zero_shot.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    projectors, seeds = args.projectors.split(","), [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="smol_zero_shot_") as scratch:
        runs = Path(args.runs_dir or scratch)
        start = time.time()
        stage1 = run_stage1(
            projectors, runs, [], seeds=seeds, recipe=stage1_recipe_for("smol"), image_size=112
        )
        stage1_s = time.time() - start
        for projector in projectors:
            for seed in seeds:
                for init, files in (("stage 1", stage1), ("fresh (no stage 1)", None)):
                    flags = Cell(projector, "projector_only", seed).flags(runs / "unused", files)
                    spec = parse_spec(["--config", str(RECIPE), *flags])
                    for record in zero_shot_records(spec, seed=seed, key="benchmark"):
                        m = record["metrics"]
                        rows.append({
                            "projector": projector, "seed": seed, "init": init, "form": record["cell"]["strategy"],
                            "question": record["question"], "test_auc": m["test"]["auc"],
                            "heldout_auc": (m.get("heldout") or {}).get("auc"), "val_auc": m["val"]["auc"],
                            "test_accuracy": m["test"]["accuracy"], "n_test": len(record["scores"]["test"]["p_fake"]),
                            "scoring_s": record["time"]["scoring_s"],
                        })  # fmt: skip
    git = git_state()
    lines = [
        "# Zero-shot rows on the `smol` preset: the stage-1 model before detection training",
        "",
        f"Command: `{command}`; code: git {git['commit'][:7] if git['commit'] else '?'}{' (dirty)' if git['dirty'] else ''}; "
        f"machine: {cpu_model()}, one thread, no GPU. Stage 1: llava_df/configs/stage1_smol.yaml "
        f"({stage1_s / 60:.1f} min for {len(projectors) * len(seeds)} run(s)); splits and scoring: "
        "llava_df/configs/sweep_smol.yaml's, as its cells are scored (llava_df/sweep/zeroshot.py).",
        "",
        "| projector | seed | projector init | form | question (fake / real answer) | val AUC | test AUC | held-out AUC | "
        "test accuracy (val-chosen threshold) | test images |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        q = r["question"]
        held = "-" if r["heldout_auc"] is None else f"{r['heldout_auc']:.3f}"
        lines.append(
            f"| {r['projector']} | {r['seed']} | {r['init']} | {r['form']} | {q['prompt']!r} ({q['answer_fake']} / "
            f"{q['answer_real']}) | {r['val_auc']:.3f} | {r['test_auc']:.3f} | {held} | {r['test_accuracy']:.3f} | {r['n_test']} |"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "zero_shot.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    (OUT / "zero_shot.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'zero_shot.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
