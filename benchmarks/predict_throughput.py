"""Predict on a folder of 1000 faces: images per second before and after, with and without OMP_NUM_THREADS.

    python benchmarks/predict_throughput.py                 # old = OLD_COMMIT (before #23), new = HEAD

Both code versions run from git worktrees (the committed code), on the same trained tiny detector
(trained once by the old code with the sweep recipe on 600 faces, so both can read it) and the
same 1000 synthetic faces (seed 11, never seen in training). Each cell of the table is one
``llava-df predict --run_dir RUN FOLDER --batch_size 32`` call:

- threads: ``OMP_NUM_THREADS=1``, ``OMP_NUM_THREADS=2`` (every core here) or unset (the code's choice);
- load: an idle machine, or one core held by another process (a spinning Python loop), as on a
  shared machine or beside a training run.

Scoring rate = 999 / (wall of 1000 faces - wall of 1 face): the start-up (imports, the model) cancels.
Writes results/predict_throughput.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "fb21c6d"
THREADS = ("1", "2", None)
LOADS = ("idle", "one core busy")


def llava_df(code: Path, args: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llava_df", *args], check=True, cwd=code, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", default=OLD_COMMIT)
    ap.add_argument("--new", default="HEAD")
    ap.add_argument("--out", default=str(ROOT / "results" / "predict_throughput.md"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from llava_df.provenance import cpu_model, git_state

    rows = []
    with tempfile.TemporaryDirectory(prefix="llava_df_predict_") as tmp:
        scratch = Path(tmp)
        codes = {"old": scratch / "old", "new": scratch / "new"}
        for name, commit in (("old", args.old), ("new", args.new)):
            subprocess.run(
                ["git", "worktree", "add", "-q", "--detach", str(codes[name]), commit], check=True, cwd=ROOT
            )
        try:
            base = dict(os.environ, LLAVA_DF_CACHE=str(scratch / "cache"))
            base.pop("OMP_NUM_THREADS", None)
            env_old = base | {"PYTHONPATH": str(codes["old"]), "OMP_NUM_THREADS": "1"}
            llava_df(
                codes["old"],
                ["data", "synthetic", "--out", str(scratch / "faces"), "--n", "1000", "--seed", "11"],
                env_old,
            )
            one = scratch / "one"
            one.mkdir()
            first = sorted((scratch / "faces" / "images").iterdir())[0]
            (one / first.name).write_bytes(first.read_bytes())
            run = scratch / "run"
            llava_df(codes["old"], ["train", "--config", "sweep_tiny", "--synthetic_n", "600", "--strategy", "lora",
                                    "--output_dir", str(run), "--disable_tqdm", "True"], env_old)  # fmt: skip
            for load in LOADS:
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "idle" else None
                time.sleep(2 if hog else 0)
                try:
                    for threads in THREADS:
                        for name, code in codes.items():
                            env = base | {"PYTHONPATH": str(code)}
                            if threads is not None:
                                env["OMP_NUM_THREADS"] = threads
                            predict = ["predict", "--run_dir", str(run), "--batch_size", "32"]
                            wall_1 = llava_df(code, [*predict, str(one)], env)
                            wall = llava_df(code, [*predict, str(scratch / "faces" / "images")], env)
                            rate = 999 / max(wall - wall_1, 1e-9)
                            rows.append((load, threads or "unset", name, wall, wall_1, rate))
                            print(rows[-1], flush=True)
                finally:
                    if hog:
                        hog.kill()
        finally:
            for code in codes.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(code)], cwd=ROOT)
    git = git_state()
    lines = [
        "# Predict throughput: 1000 faces, before and after",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/predict_throughput.py', *sys.argv[1:]])}`; old code: git "
        f"{args.old}; new code: git {args.new} (this checkout: {str(git['commit'])[:10]}); machine: {cpu_model()}, "
        f"{os.cpu_count()} cores, no GPU.",
        "Each row: `llava-df predict --run_dir RUN faces/ --batch_size 32` on 1000 synthetic 64x64 faces with a tiny "
        "LoRA detector. Rate = 999 / (wall of 1000 faces - wall of 1 face): start-up cancels. 'one core busy': "
        "another process spins on one core during the call.",
        "",
        "| load | OMP_NUM_THREADS | code | wall, 1000 faces (s) | wall, 1 face (s) | faces/s scoring |",
        "|---|---|---|---:|---:|---:|",
        *(
            f"| {load} | {threads} | {name} | {wall:.1f} | {wall_1:.1f} | {rate:.0f} |"
            for load, threads, name, wall, wall_1, rate in rows
        ),  # fmt: skip
        "",
        "The new code picks its thread count from the cores idle when it starts (llava_df/threads.py) unless "
        "OMP_NUM_THREADS is set; compare its 'unset' rows with the fastest fixed setting of the same load.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
