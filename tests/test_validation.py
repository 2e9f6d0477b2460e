"""Every flag and the whole dataset are checked before weights load or the output folder is touched."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
from PIL import Image

import llava_df.model.build
from llava_df.errors import ConfigError
from llava_df.spec.resolve import parse_spec
from llava_df.train.workflow import main

FAST = shlex.split("--synthetic_n 24 --max_steps 1 --eval_strategy no --save_strategy no --report_to none")


@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load weights fails the test: validation must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("build_model was called before validation finished")

    monkeypatch.setattr(llava_df.model.build, "build_model", refuse)


@pytest.mark.parametrize(
    "flags,message",
    [
        ("--lora_enable True --lora_r 0", "--lora_r 0: expected an integer >= 1"),
        ("--lora_enable True --lora_dropout 1.5", "--lora_dropout 1.5: expected a probability in [0, 1)"),
        ("--lora_enable True --lora_alpha -2", "--lora_alpha -2: expected a number > 0"),
        ("--gradient_accumulation_steps 0", "--gradient_accumulation_steps 0: expected an integer >= 1"),
        ("--per_device_train_batch_size 0", "--per_device_train_batch_size 0: expected an integer >= 1"),
        ("--learning_rate=-1e-4", "--learning_rate -0.0001: expected a number in (0, 1]"),
        ("--learning_rate nan", "--learning_rate nan"),
        ("--num_train_epochs 0", "--num_train_epochs 0.0: expected a number of epochs > 0"),
        ("--max_steps 0", "--max_steps 0: expected -1 (train by epochs) or an integer >= 1"),
        ("--difficulty 2", "--difficulty 2.0: expected a number in [0, 1]"),
        ("--synthetic_n 3", "--synthetic_n 3: expected an integer >= 12"),
        ("--save_total_limit 0", "--save_total_limit 0: expected an integer >= 1"),
    ],
)
def test_numeric_flags_out_of_range_are_refused_naming_the_value(flags, message):
    with pytest.raises(ConfigError) as info:
        parse_spec([*shlex.split(flags), "--output_dir", "o"])
    assert message in str(info.value)


def test_an_absurd_projector_is_refused_with_its_parameter_count(tmp_path, capsys, no_model_load):
    with pytest.raises(SystemExit) as info:
        main(["--mm_projector_type", "mlp99999x_gelu", *FAST, "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: --mm_projector_type mlp99999x_gelu has ")
    assert "parameters" in err and "--allow_large_projector True" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_empty_output_dir_never_means_the_current_folder():
    with pytest.raises(ConfigError, match=r"--output_dir '': expected a folder name"):
        parse_spec(["--output_dir", ""])


def test_a_key_twice_in_a_config_yaml_is_an_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lora_r: 8\nlearning_rate: 1e-4\nlora_r: 16\n")
    with pytest.raises(ConfigError, match=r"key 'lora_r' is set twice \(lines 1 and 3\)"):
        parse_spec(["--config", str(config)])


def _labelled_folder(root, bad_row: int | None = None):
    rows = []
    for i in range(12):
        arr = np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / "images" / f"{i}.png")
        label = "fake" if i % 2 else "real"
        rows.append(f"images/{i}.png,{'maybe' if i == bad_row else label}")
    (root / "metadata.csv").write_text("file_name,label\n" + "\n".join(rows) + "\n")
    return root


def test_a_bad_label_fails_before_the_model_loads_and_before_the_folder_is_touched(
    tmp_path, capsys, no_model_load
):
    data = _labelled_folder(tmp_path / "data", bad_row=5)
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as info:
        main(["--data_dir", str(data), *FAST, "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Unknown label 'maybe'" in last and "Traceback" not in err
    assert not out.exists()


def test_a_prompt_that_model_max_length_truncates_fails_before_loading(tmp_path, capsys, no_model_load):
    with pytest.raises(SystemExit) as info:
        main([*FAST, "--model_max_length", "20", "--output_dir", str(tmp_path / "o")])
    assert info.value.code == 1 and "--model_max_length" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_start_weights_that_do_not_fit_fail_before_loading(tmp_path, capsys, no_model_load):
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "mm_projector.safetensors"
    save_file({"0.weight": torch.zeros(3, 3), "0.bias": torch.zeros(3)}, bad)
    with pytest.raises(SystemExit) as info:
        main([*FAST, "--pretrain_mm_mlp_adapter", str(bad), "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "do not fit projector 'mlp2x_gelu'" in err and "expected (128" in err
    assert not (tmp_path / "o").exists()
