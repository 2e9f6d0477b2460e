"""One study, one machine type, one commit: what a confirmatory family's runs were made with, checked and named.

How to call::

    sides = study_values(records)       # {"code commit": {value: [cell names]}, "tree": ..., "machine": ..., "preset": ...}
    check_one_study(records)            # UsageError naming each side's cells, unless every run shares one of each
    line = study_line(records)          # the table header's "Runs made at code commit ..., machine ..., preset ..."
    check_complete(records, protocol)   # UsageError naming the protocol's cells that have no record yet
    check_learning_rates(records, protocol)  # UsageError naming runs not at the protocol's lr_choice rate

A record carries them (llava_df.sweep.record.build_record, from the run's env.json): ``env.git.commit``
and ``env.git.dirty`` (provenance.git_state: tracked changes or untracked files outside results/),
``env.device.cpu_model`` (and the GPU's name where the run had one) and the preset,
``config.model.model_name_or_path``, and ``env.packages`` (the versions of torch, transformers, peft and
bitsandbytes, which a cell's key hashes). A field a record lacks reads "not recorded", which a
confirmatory study refuses too: it cannot show what the run was made with.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from llava_df.errors import UsageError

NOT_RECORDED = "not recorded"
SHOWN = 4  # cell names shown per side before "and N more"


def _machine(device: dict) -> str:
    cpu = device.get("cpu_model")
    gpu = device.get("gpu") or device.get(
        "gpu_name"
    )  # provenance.device_info's key, and report.machine_name's
    if cpu is None and gpu is None:
        return NOT_RECORDED
    return f"{cpu or 'CPU ' + NOT_RECORDED} + {gpu}" if gpu else str(cpu)


def _tree(dirty) -> str:
    return {False: "clean", True: "dirty"}.get(dirty, NOT_RECORDED)


# The packages a cell's key hashes (record.code_fingerprint): another version computes another run.
KEY_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes")


def _packages(versions: dict | None) -> str:
    if not versions or not all(versions.get(k) for k in KEY_PACKAGES):
        return NOT_RECORDED
    return " ".join(f"{k} {versions[k]}" for k in KEY_PACKAGES)


def study_values(records: list[dict]) -> dict[str, dict[str, list[str]]]:
    """{what: {value: [cell names with that value]}} for the code commit, the tree, the machine, the preset and the
    versions of the packages that compute a run."""
    found: dict[str, dict[str, list[str]]] = {
        "code commit": {}, "tree": {}, "machine": {}, "preset": {}, "packages": {}
    }  # fmt: skip
    for r in records:
        env, name = r.get("env") or {}, r["cell"]["name"]
        git = env.get("git") or {}
        values = {
            "code commit": git.get("commit") or NOT_RECORDED,
            "tree": _tree(git.get("dirty")),
            "machine": _machine(env.get("device") or {}),
            "preset": ((r.get("config") or {}).get("model") or {}).get("model_name_or_path") or NOT_RECORDED,
            "packages": _packages(env.get("packages")),
        }
        for what, value in values.items():
            found[what].setdefault(str(value), []).append(name)
    return found


def _cells(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def check_one_study(records: list[dict], machine: str | None = None) -> dict[str, str]:
    """{what: the one value} when the runs share one code commit (clean tree), machine and preset; else a
    UsageError naming every value and the cells on each side. ``machine``: the protocol's, which that one must be."""
    problems = []
    for what, sides in study_values(records).items():
        bad = len(sides) > 1 or NOT_RECORDED in sides or (what == "tree" and "clean" not in sides)
        if what == "machine" and machine is not None and set(sides) != {machine}:
            bad = True
            sides = {**sides, f"the protocol's {machine}": []}
        if bad:
            listed = "; ".join(f"{value} ({_cells(names) or 'none'})" for value, names in sides.items())
            problems.append(f"{what}: {listed}")
    if problems:
        raise UsageError(
            "the confirmatory records are not one study (protocol one_commit: one code commit, a clean tree, one "
            "machine type, one preset, one set of package versions): "
            + " | ".join(problems)
            + ". Rerun the odd cells at the study's commit "
            "on its machine, or pass --exploratory to analyse them labelled so."
        )
    return {what: next(iter(sides)) for what, sides in study_values(records).items()}


def check_complete(records: list[dict], protocol: dict) -> None:
    """A protocol that lists its ``seeds`` is analysed only when every (projector, strategy, seed) it names has a
    record: a partial study would let its analysis be run early, looked at and run again (issue #34's rule)."""
    if "seeds" not in protocol:
        return
    have = {(r["cell"]["projector"], r["cell"]["strategy"], r["cell"]["seed"]) for r in records}
    want = [(p, s, seed) for seed in protocol["seeds"] for s in protocol["strategies"]
            for p in (protocol["reference"], *protocol["candidates"])]  # fmt: skip
    missing = [f"{p}__{s}__seed{seed}" for p, s, seed in want if (p, s, seed) not in have]
    if missing:
        raise UsageError(
            f"the study is incomplete: {len(missing)} of the protocol's {len(want)} cells have no record "
            f"({_cells(missing)}). The analysis runs only on a complete study: finish the run with its own command "
            "(finished cells are kept), or pass --exploratory to look at a partial one, labelled so."
        )


def check_learning_rates(records: list[dict], protocol: dict) -> None:
    """A protocol that names its ``lr_choice`` file (a path from the repository root) is analysed only when every run
    trained at its (projector, strategy)'s rate there: a cell rerun at another rate is another study."""
    if "lr_choice" not in protocol:
        return
    path = Path(protocol["lr_choice"])
    try:
        choices = json.loads(path.read_text())["choices"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(
            f"the protocol's lr_choice {path}: unreadable ({type(err).__name__}). Run the analysis from the repository "
            "root, where the grid's committed choice file is, or pass --exploratory."
        ) from None
    off = []
    for r in records:
        cell = r["cell"]
        want = choices.get(f"{cell['projector']}/{cell['strategy']}")
        got = ((r.get("config") or {}).get("training") or {}).get("learning_rate")
        if want is None or got is None or not math.isclose(float(got), float(want), rel_tol=1e-9):
            off.append(f"{cell['name']} ({got} trained, {want} chosen)")
    if off:
        raise UsageError(
            f"{len(off)} runs did not train at the learning rate {path} chose for them: {_cells(off)}. Rerun them with "
            "--lr_choice, or pass --exploratory to analyse them labelled so."
        )


def study_line(records: list[dict]) -> str:
    """The header's provenance line; a value shared by some runs only is given with its run count."""

    def named(sides: dict[str, list[str]]) -> str:
        if len(sides) == 1:
            return next(iter(sides))
        return ", ".join(f"{value} ({len(names)} runs)" for value, names in sides.items())

    v = study_values(records)
    return (f"Runs made at code commit {named(v['code commit'])} (tree: {named(v['tree'])}), machine "
            f"{named(v['machine'])}, preset {named(v['preset'])}, packages {named(v['packages'])}.")  # fmt: skip
