"""One error style everywhere: `error: <bad value, expected, fix>`, exit 2 (usage) or 1 (run), no traceback."""

from __future__ import annotations

import json
import shlex

import pytest

from llava_df.apps.evaluate import main as evaluate_main
from llava_df.apps.merge import main as merge_main
from llava_df.data.__main__ import main as data_main
from llava_df.errors import UsageError
from llava_df.projectors.__main__ import main as projectors_main
from llava_df.spec.resolve import parse_spec
from llava_df.train.workflow import main as train_main
from llava_df.train.workflow import train


def synthetic_main(argv):
    return data_main(["synthetic", *argv])


def sbi_main(argv):
    return data_main(["sbi", *argv])


RUN = shlex.split(
    "--tune_mm_mlp_adapter True --synthetic_n 24 --per_device_train_batch_size 4 --max_steps 2 --eval_strategy no "
    "--save_strategy no --report_to none --seed 0"
)


def one_error_line(capsys, code, info) -> str:
    err = capsys.readouterr().err
    assert info.value.code == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    return last


@pytest.mark.parametrize(
    "entry,argv,code,message",
    [
        (train_main, ["--lora_rnak", "8"], 2, "Did you mean: --lora_r"),
        (evaluate_main, ["--run_dir", "nowhere"], 2, "--run_dir nowhere: no such folder"),
        (evaluate_main, ["--weights", "middle", "--run_dir", "x"], 2, "invalid choice: 'middle'"),
        (merge_main, ["--run_dir", "nowhere", "--output_dir", "m"], 2, "--run_dir nowhere: no such folder"),
        (synthetic_main, ["--out", "x", "--n", "3"], 1, "n=3 is too small"),
        (synthetic_main, ["--out", "x", "--n", "many"], 2, "invalid int value: 'many'"),
        (sbi_main, ["--real_dir", "nowhere", "--out", "x"], 2, "--real_dir nowhere: no such folder"),
        (projectors_main, ["--also", "mlp2x_relu"], 2, "Unknown projector 'mlp2x_relu'"),
    ],
)
def test_every_entry_point_ends_a_user_error_with_one_line(
    entry, argv, code, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        entry(argv)
    assert message in one_error_line(capsys, code, info)


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError):
        synthetic_main(["--out", "x", "--n", "many", "--debug"])
    with pytest.raises(UsageError):
        evaluate_main(["--run_dir", "nowhere", "--debug"])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "o"
    train(parse_spec([*RUN, "--output_dir", str(out)]))
    return out


@pytest.mark.slow
def test_evaluate_prints_then_writes_to_output_and_leaves_no_scratch(finished, tmp_path, capsys):
    target = tmp_path / "elsewhere" / "metrics.json"
    metrics = evaluate_main(["--run_dir", str(finished), "--weights", "final", "--output", str(target)])
    printed = capsys.readouterr().out
    assert json.loads(printed) == json.loads(target.read_text()) == json.loads(json.dumps(metrics))
    assert not (finished / "eval_tmp").exists() and not (finished / "eval_final_test.json").exists()


@pytest.mark.slow
def test_evaluate_on_a_read_only_run_prints_the_metrics_and_says_to_use_output(finished, capsys, monkeypatch):
    import llava_df.apps.evaluate

    def read_only(path, payload):  # as on a read-only mount (root ignores chmod, so simulate it)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(llava_df.apps.evaluate, "write_json", read_only)
    with pytest.raises(SystemExit) as info:
        evaluate_main(["--run_dir", str(finished), "--weights", "final"])
    out = capsys.readouterr()
    assert info.value.code == 1 and '"auc"' in out.out
    assert "Permission denied" in out.err and "Pass --output" in out.err


@pytest.mark.slow
def test_merge_refuses_a_non_empty_folder_and_the_run_itself(finished, tmp_path, capsys):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as info:
        merge_main(["--run_dir", str(finished), "--output_dir", str(target)])
    assert "exists and is not empty" in one_error_line(capsys, 2, info)
    with pytest.raises(SystemExit) as info:
        merge_main(["--run_dir", str(finished), "--output_dir", str(finished / "merged")])
    assert "inside (or holds) --run_dir" in one_error_line(capsys, 2, info)
    assert (target / "keep.txt").read_text() == "mine" and not (finished / "merged").exists()


@pytest.mark.slow
def test_a_corrupt_weights_file_is_named_with_the_checkpoints_to_use_instead(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    (run / "final" / "mm_projector.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(SystemExit) as info:
        evaluate_main(["--run_dir", str(run), "--weights", "final"])
    line = one_error_line(capsys, 1, info)
    assert (
        "final cannot be trusted: mm_projector.safetensors is 64 bytes" in line and "re-run training" in line
    )
