"""How long each `llava-df <verb>` takes to answer `--help` and a usage error, each in a fresh process (issue #32).

    python benchmarks/bench_cli_latency.py --before <checkout of the old code> --repeats 5
        -> results/cli_latency.{json,md}

Each command runs ``python -m llava_df <verb> ...`` in a new interpreter with PYTHONPATH set to the checkout
measured, so two versions of the code are timed with the same interpreter and packages. Reported: the median and
the fastest of ``--repeats`` runs (the fastest is the least disturbed by other load), and whether torch was
imported (the process is asked at exit). The first call after an install makes the flag table once (a child
process that imports torch) and caches it: that one call is reported apart, from an empty cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llava_df.provenance import cpu_model, run_environment  # noqa: E402

# verb -> (--help argv, a usage error's argv)
CASES = {
    "train": (["train", "--help"], ["train", "--lora_rnak", "8"]),
    "evaluate": (["evaluate", "--help"], ["evaluate", "--run_dir", "nowhere"]),
    "predict": (["predict", "--help"], ["predict", "--run_dir", ".", "missing.png"]),
    "demo": (["demo", "--help"], ["demo", "--run_dir", ".", "--port", "0"]),
    "merge": (["merge", "--help"], ["merge", "--run_dir", "nowhere", "--output_dir", "m"]),
    "compare": (["compare", "--help"], ["compare", "--worker", "2"]),
    "plan": (["plan", "--help"], ["plan", "--budgt", "24GB"]),
    "projectors": (["projectors", "--help"], ["projectors", "--in_dim", "0"]),
    "data": (["data", "synthetic", "--help"], ["data", "synthetic", "--out", "x", "--n", "many"]),
}
# Run at exit of the measured process: was torch imported?
PROBE = "import atexit, sys; atexit.register(lambda: print('TORCH', 'torch' in sys.modules, file=sys.stderr))"


def one(checkout: Path, argv: list[str], cache: Path) -> tuple[float, int, bool]:
    """(seconds, exit code, torch imported) of one fresh ``python -m llava_df argv``."""
    code = f"{PROBE}\nimport runpy, sys\nsys.argv = ['llava-df', *{argv!r}]\nrunpy.run_module('llava_df', run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": str(checkout), "LLAVA_DF_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                              timeout=600)  # fmt: skip
        seconds = time.perf_counter() - start
    torch = "TORCH True" in done.stderr
    return seconds, done.returncode, torch


def measure(checkout: Path, repeats: int) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = Path(cache_dir)
        first = one(checkout, CASES["train"][0], cache)  # an empty cache: the flag table is made here, once
        for verb, (help_argv, error_argv) in CASES.items():
            row = {}
            for kind, argv in (("help", help_argv), ("usage_error", error_argv)):
                runs = [one(checkout, argv, cache) for _ in range(repeats)]
                row[kind] = {"argv": shlex.join(argv), "median_s": round(statistics.median(r[0] for r in runs), 2),
                             "fastest_s": round(min(r[0] for r in runs), 2), "exit_codes": sorted({r[1] for r in runs}),
                             "torch_imported": any(r[2] for r in runs)}  # fmt: skip
            rows[verb] = row
    return {
        "first_call_empty_cache_s": round(first[0], 2),
        "first_call_torch_imported": first[2],
        "verbs": rows,
    }


def git_commit(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--", "llava_df"], capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    return done.stdout.strip() + (" (dirty)" if dirty else "")


def write_markdown(payload: dict, path: Path) -> None:
    labels = list(payload["checkouts"])
    lines = [
        "# `llava-df <verb>`: time to answer --help and a usage error, fresh process each",
        "",
        f"Command: `{payload['command']}`; machine: {payload['machine']}; {payload['repeats']} runs each, median "
        "(fastest) in seconds; `torch` says whether the process imported torch.",
        "",
        "Checkouts: " + "; ".join(f"{k} = git {v['commit']}" for k, v in payload["checkouts"].items()) + ".",
        "",
        "| verb | what | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    first = next(iter(payload["checkouts"].values()))["result"]["verbs"]
    for verb in first:
        for kind in ("help", "usage_error"):
            cells = []
            for label in labels:
                r = payload["checkouts"][label]["result"]["verbs"][verb][kind]
                cells.append(
                    f"{r['median_s']:.2f} ({r['fastest_s']:.2f}){' torch' if r['torch_imported'] else ''}"
                )
            lines.append(f"| {verb} | `{first[verb][kind]['argv']}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "First call with an empty cache (`llava-df train --help`; the flag table is made and cached): "
        + "; ".join(
            f"{k} {v['result']['first_call_empty_cache_s']:.2f} s" for k, v in payload["checkouts"].items()
        )
        + ".",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--before", type=Path, help="a checkout of the code to compare with (e.g. a git worktree)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "cli_latency")
    args = parser.parse_args()
    checkouts = {"after": ROOT} if args.before is None else {"before": args.before.resolve(), "after": ROOT}
    payload = {
        "command": "python benchmarks/bench_cli_latency.py"
        + (f" --before {args.before}" if args.before else "")
        + f" --repeats {args.repeats}",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "environment": run_environment(),
        "repeats": args.repeats,
        "checkouts": {
            k: {"commit": git_commit(v), "result": measure(v, args.repeats)} for k, v in checkouts.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(payload, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
