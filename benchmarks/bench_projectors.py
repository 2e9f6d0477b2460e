"""Projector cost at LLaVA-1.5-7B widths (CLIP ViT-L/14 1024 -> Vicuna-7B 4096), 2 images of tokens.

    python benchmarks/bench_projectors.py            # ~2 min on 2 shared CPU cores

Runs ``python -m llava_df.projectors`` with the arguments in ``ARGS`` (every registry preset,
plus kan_light_g16) and writes results/projectors.json (settings, machine, per-repeat times)
and results/projectors.md (the command, the machine, the table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava_df.projectors.__main__ import REFERENCE, format_table, main

RESULTS = Path(__file__).resolve().parent.parent / "results"
ARGS = ["--in-dim", "1024", "--out-dim", "4096", "--bench", "--tokens", "1152", "--also", "kan_light_g16"]


def write_markdown(result: dict, path: Path) -> None:
    env, settings = result["environment"], result["settings"]
    git = env["git"]
    lines = [
        f"# Projector cost: {settings['in_dim']} -> {settings['out_dim']}, {settings['tokens']} tokens",
        "",
        "Produced by:",
        "",
        "```bash",
        f"python benchmarks/bench_projectors.py {' '.join(sys.argv[1:])}".rstrip(),
        f"# = {result['command']}",
        "```",
        "",
        f"Machine: {env['cpu_model']}, {env['device']['cpu_count']} cores ({env['torch_threads']} torch threads), "
        f"{settings['device']}, {settings['dtype']}; torch {env['packages']['torch']}, python "
        f"{env['device']['python']}; {env['date']}; git {git['commit']}{' (dirty)' if git['dirty'] else ''}.",
        "",
        format_table(result["rows"]),
        "",
        f"Columns: parameters; forward multiply-adds per token (matmuls, counted by FlopCounterMode, "
        f"so the KAN's custom autograd Functions count by the same rule); median forward+backward "
        f"time of `module(x).sum()` over {settings['repeats']} rounds and the fastest round, input not requiring grad "
        f"(the vision tower is frozen), candidates interleaved across rounds; bytes autograd saves "
        f"for backward (parameters excluded). Each also as a ratio to {REFERENCE}.",
        "",
        "Times come from a CPU shared with other jobs: read ratios, not absolute values, and see "
        "`times_s` in projectors.json for the spread of each candidate. Under background load a "
        "projector made of many short elementwise kernels (kan_light: ~65 per forward+backward and "
        "chunk, against a handful for mlp2x_gelu) loses more than a matmul-bound one, since every "
        "OpenMP parallel region waits for a descheduled thread; the fastest round is the "
        "undisturbed comparison.",
    ]
    path.write_text("\n".join(lines) + "\n")


def run(repeats: int, results: Path = RESULTS) -> dict:
    results.mkdir(parents=True, exist_ok=True)
    result = main([*ARGS, "--repeats", str(repeats), "--json", str(results / "projectors.json")])
    write_markdown(result, results / "projectors.md")
    print(f"wrote {results / 'projectors.md'}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=15, help="Timed rounds per projector (median reported)."
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="Folder for projectors.md / projectors.json."
    )
    cli = parser.parse_args()
    run(cli.repeats, cli.results)
