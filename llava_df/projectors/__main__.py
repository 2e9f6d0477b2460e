"""``llava-df projectors``: every projector preset at given widths, relative to LLaVA's ``mlp2x_gelu``.

How to call (``python -m llava_df.projectors ...`` is the same command)::

    llava-df projectors --in_dim 1024 --out_dim 4096                      # parameters, MACs/token
    llava-df projectors --in_dim 1024 --out_dim 4096 --bench --tokens 1152 --repeats 5 \\
        --json results/projectors.json                                    # + time and saved memory
    llava-df projectors --fit_gelu                                        # refit kan_light's GELU init
    llava-df projectors --help                                            # every flag, with its default

The rows are the registry's ``PRESETS`` (plus ``--also`` names), so a newly registered family
shows up here without touching this file. With ``--bench`` the input does not require grad (the
vision tower is frozen), and the candidates are interleaved across repeats (round r starts at
candidate r) so background load hits all of them alike; the median over repeats is reported,
and the fastest round (the least disturbed one, timeit's estimator on a busy machine).
"""

from __future__ import annotations

import json
import shlex
import statistics
from dataclasses import asdict
from pathlib import Path

import torch

from llava_df.errors import UsageError, cli_entry
from llava_df.projectors import PRESETS, create_projector
from llava_df.projectors.catalog import GELU_FIT_RANGE
from llava_df.projectors.cli_flags import REFERENCE, ProjectorsArguments, parse_args
from llava_df.projectors.profile import (
    macs_per_token,
    num_parameters,
    saved_tensor_bytes,
    time_forward_backward,
)
from llava_df.projectors.rational import fit_gelu
from llava_df.provenance import cpu_model, run_environment

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _ratio(value, reference) -> float | None:
    return None if value is None or not reference else value / reference


def measure(
    names: list[str],
    in_dim: int,
    out_dim: int,
    *,
    bench: bool = False,
    tokens: int = 1152,
    repeats: int = 5,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> list[dict]:
    """One dict per name: parameters, MACs/token and (bench) median fwd+bwd seconds, saved bytes.

    A name that cannot be built at these widths (``identity`` with in_dim != out_dim) gets a row
    with ``skipped`` set to the builder's error message instead of numbers.
    """
    rows, modules = [], {}
    for name in names:
        torch.manual_seed(seed)
        row = {"name": name, "skipped": None}
        try:
            module = create_projector(name, in_dim, out_dim)
        except ValueError as exc:  # e.g. identity at in_dim != out_dim: shown, not dropped
            rows.append(row | {"skipped": str(exc)})
            continue
        row["parameters"] = num_parameters(module)
        row["macs_per_token"] = macs_per_token(module, in_dim)
        rows.append(row)
        modules[name] = module.to(device=device, dtype=dtype)

    if bench:
        x = torch.randn(1, tokens, in_dim, device=device, dtype=dtype)  # frozen vision features: no grad
        timed = [n for n, m in modules.items() if any(p.requires_grad for p in m.parameters())]
        times: dict[str, list[float]] = {n: [] for n in timed}
        for name in timed:  # warm-up (allocator, thread pools, kernel selection), not recorded
            time_forward_backward(modules[name], x, repeats=1, warmup=1)
        for r in range(repeats):
            for name in timed[r % len(timed) :] + timed[: r % len(timed)]:
                times[name] += [time_forward_backward(modules[name], x, repeats=1, warmup=0)]
        for row in rows:
            name = row["name"]
            if name in modules:
                row["saved_bytes"] = saved_tensor_bytes(modules[name], x)
                row["time_s"] = statistics.median(times[name]) if name in times else None
                row["fastest_s"] = min(times[name]) if name in times else None
                row["times_s"] = times.get(name)

    ref = next((r for r in rows if r["name"] == REFERENCE and not r["skipped"]), {})
    for row in rows:
        for key in ("parameters", "macs_per_token", "time_s", "fastest_s", "saved_bytes"):
            if key in row:
                row[f"{key}_ratio"] = _ratio(row[key], ref.get(key))
    return rows


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(rows: list[dict]) -> str:
    """Markdown table of ``measure``'s rows (bench columns only when they were measured)."""
    bench = any("time_s" in r for r in rows)
    head = ["projector", "parameters", f"vs {REFERENCE}", "MACs/token", f"vs {REFERENCE}"]
    if bench:
        head += [
            "fwd+bwd ms",
            f"vs {REFERENCE}",
            "fastest ms",
            f"vs {REFERENCE}",
            "saved for bwd MiB",
            f"vs {REFERENCE}",
        ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for row in rows:
        if row["skipped"]:
            cells = [row["name"], "skipped (see below)"] + ["-"] * (len(head) - 2)
            notes.append(f"- {row['name']}: {row['skipped']}")
        else:
            time_ms = None if row.get("time_s") is None else row["time_s"] * 1e3
            fastest_ms = None if row.get("fastest_s") is None else row["fastest_s"] * 1e3
            saved_mib = None if row.get("saved_bytes") is None else row["saved_bytes"] / 2**20
            cells = [
                row["name"],
                f"{row['parameters']:,}",
                _fmt(row["parameters_ratio"], ".3f"),
                f"{row['macs_per_token']:,.0f}",
                _fmt(row["macs_per_token_ratio"], ".3f"),
            ]
            if bench:
                cells += [
                    _fmt(time_ms, ".1f"),
                    _fmt(row.get("time_s_ratio"), ".3f"),
                    _fmt(fastest_ms, ".1f"),
                    _fmt(row.get("fastest_s_ratio"), ".3f"),
                    _fmt(saved_mib, ".4g"),
                    _fmt(row.get("saved_bytes_ratio"), ".3f"),
                ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))


@cli_entry
def main(argv: list[str]) -> dict:
    """Run the CLI; returns what ``--json`` writes (settings, environment, rows)."""
    return run(parse_args(argv))


def run(args: ProjectorsArguments) -> dict:
    """The table for ``args`` (parsed and checked by llava_df.projectors.cli_flags.parse_args)."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"--device {args.device}: no CUDA device visible to torch {torch.__version__}; use --device cpu."
        )
    if args.fit_gelu:
        a, b, max_err = fit_gelu()
        print(f"GELU_NUMERATOR = {tuple(a.tolist())}")
        print(f"GELU_DENOMINATOR = {tuple(b.tolist())}")
        print(f"# max |F(x) - GELU(x)| on {list(GELU_FIT_RANGE)}: {max_err:.3e}")
        return {"numerator": a.tolist(), "denominator": b.tolist(), "max_error": max_err}

    names = list(dict.fromkeys([*PRESETS, *args.also]))
    rows = measure(
        names,
        args.in_dim,
        args.out_dim,
        bench=args.bench,
        tokens=args.tokens,
        repeats=args.repeats,
        device=args.device,
        dtype=DTYPES[args.dtype],
        seed=args.seed,
    )
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items() if k != "fit_gelu"}
    environment = run_environment() | {"cpu_model": cpu_model(), "torch_threads": torch.get_num_threads()}
    result = {
        "command": shlex.join(["llava-df", "projectors", *args.argv]),
        "settings": settings,
        "environment": environment,
        "rows": rows,
    }
    where = f"{args.device}, {args.dtype}" + (
        f", {args.tokens} tokens, median of {args.repeats}" if args.bench else ""
    )
    print(f"Projectors {args.in_dim} -> {args.out_dim} ({where}):\n")
    print(format_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
