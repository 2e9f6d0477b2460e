"""`llava-df projectors` (`python -m llava_df.projectors`): the table of every preset, --bench, --json, --fit_gelu."""

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llava_df.projectors import PRESETS
from llava_df.projectors.__main__ import REFERENCE, main
from llava_df.projectors.catalog import GELU_FIT_RANGE
from llava_df.projectors.rational import GELU_FIT_MAX_ERROR, GroupRational

IN, OUT = 32, 64
MLP2X_PARAMS = IN * OUT + OUT + OUT * OUT + OUT  # Linear(in, out) + Linear(out, out)
REPO = Path(__file__).resolve().parent.parent


def table_row(stdout: str, name: str) -> list[str]:
    rows = [line for line in stdout.splitlines() if line.startswith(f"| {name} |")]
    assert len(rows) == 1, (name, stdout)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_bench_table_and_json(tmp_path, capsys):
    path = tmp_path / "sub" / "projectors.json"
    args = ["--in_dim", str(IN), "--out_dim", str(OUT), "--bench", "--tokens", "16", "--repeats", "1"]
    result = main([*args, "--also", "kan_light_g16", "--json", str(path)])
    out = capsys.readouterr().out

    for name in [*PRESETS, "kan_light_g16"]:
        table_row(out, name)
    mlp = table_row(out, REFERENCE)
    assert mlp[1] == f"{MLP2X_PARAMS:,}" and mlp[2] == "1.000"
    assert (
        len(mlp) == 11
    )  # name, params, ratio, MACs, ratio, median time, ratio, fastest, ratio, saved, ratio
    assert "identity" in out and "needs in_dim == out_dim" in out  # shown with its reason, not dropped

    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(result))
    assert written["command"].startswith("llava-df projectors --in_dim 32")
    assert written["settings"]["in_dim"] == IN and written["settings"]["also"] == ["kan_light_g16"]
    assert written["environment"]["packages"]["torch"] == metadata.version(
        "torch"
    )  # CUDA wheels: no +cu label
    rows = {row["name"]: row for row in written["rows"]}
    assert list(rows) == [*PRESETS, "kan_light_g16"]
    assert rows["identity"]["skipped"]
    ref = rows[REFERENCE]
    assert ref["parameters"] == MLP2X_PARAMS
    assert ref["macs_per_token"] == IN * OUT + OUT * OUT
    assert ref["parameters_ratio"] == ref["time_s_ratio"] == ref["saved_bytes_ratio"] == 1.0
    for name, row in rows.items():
        if row["skipped"]:
            continue
        assert row["time_s"] == row["fastest_s"] == row["times_s"][0] > 0, name
        assert row["saved_bytes"] > 0, name
        assert row["parameters_ratio"] == pytest.approx(row["parameters"] / MLP2X_PARAMS)
    # Saved for backward, input frozen: mlp2x_gelu keeps x, h and gelu(h) (float32).
    assert ref["saved_bytes"] == 16 * (IN + OUT + OUT) * 4
    assert rows["kan_light"]["parameters"] == MLP2X_PARAMS + 8 * 10


@pytest.mark.slow
def test_module_entry_point_runs(tmp_path):
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "llava_df.projectors", "--in_dim", str(IN), "--out_dim", str(OUT)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert table_row(proc.stdout, REFERENCE)[1] == f"{MLP2X_PARAMS:,}"
    assert "fwd+bwd" not in proc.stdout  # no timing without --bench


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--also", "mlp2x_relu"], "Unknown projector 'mlp2x_relu'"),
        (["--in_dim", "0"], "--in_dim 0: expected an integer >= 1"),
        (["--dtype", "float8"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_fit_gelu_reproduces_the_stored_constants(capsys):
    result = main(["--fit_gelu"])
    assert "GELU_NUMERATOR = (" in capsys.readouterr().out
    assert result["max_error"] <= GELU_FIT_MAX_ERROR
    refit = GroupRational(1, groups=1).double()
    with torch.no_grad():
        refit.numerator.copy_(torch.tensor([result["numerator"]]))
        refit.denominator.copy_(torch.tensor([result["denominator"]]))
    stored = GroupRational(1, groups=1).double()
    x = torch.linspace(*GELU_FIT_RANGE, 2001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        assert (refit(x) - stored(x)).abs().max() < 1e-5
        assert (refit(x) - F.gelu(x)).abs().max() <= GELU_FIT_MAX_ERROR
