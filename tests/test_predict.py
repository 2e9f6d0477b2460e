"""predict (your own images), the calibrated threshold, generated answers, and the demo page in a real browser."""

from __future__ import annotations

import csv
import json
import math
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from llava_df.apps.predict import main as predict_main
from llava_df.apps.predict import parse_answer
from llava_df.data.load import load_splits
from llava_df.errors import UsageError
from llava_df.eval.threshold import choose_threshold, read_threshold
from llava_df.spec.args import DataArguments
from llava_df.spec.ranges import parse_threshold_rule
from llava_df.train.workflow import main as train_main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny LoRA run (16-bit, so a merged copy scores the same) and its test images written as PNG."""
    root = tmp_path_factory.mktemp("predict")
    out = root / "run"
    train_main(
        ["--output_dir", str(out), "--max_steps", "4", "--synthetic_n", "80", "--report_to", "none",
         "--per_device_train_batch_size", "8", "--eval_strategy", "steps", "--eval_steps", "2",
         "--save_strategy", "no", "--lora_enable", "True", "--lora_r", "4", "--threshold_rule", "youden"]
    )  # fmt: skip
    config = json.loads((out / "run_config.json").read_text())
    test = load_splits(DataArguments(**config["data"]), seed=config["training"]["seed"])["test"]
    images = root / "images"
    images.mkdir()
    for i in range(len(test)):
        item = test[i]
        item["image"].save(images / f"{item['id']}.png")  # PNG: the same pixels training scored
    return out, images


@pytest.mark.slow
def test_p_fake_on_the_test_images_equals_evaluates_scores(run, tmp_path):
    out, images = run
    rows = predict_main(["--run_dir", str(out), str(images), "--output", str(tmp_path / "p.csv")])
    scores = json.loads((out / "scores.json").read_text())["test"]
    reference = dict(zip(scores["id"], scores["p_fake"], strict=True))
    assert len(rows) == len(reference)
    for row in rows:
        assert abs(row["p_fake"] - reference[Path(row["path"]).stem]) <= 1e-5
    with open(tmp_path / "p.csv") as f:
        written = list(csv.DictReader(f))
    assert [r["path"] for r in written] == [r["path"] for r in rows]
    assert set(written[0]) >= {"path", "p_fake", "label", "threshold", "width", "height", "converted"}


@pytest.mark.slow
def test_the_run_saves_its_threshold_and_reports_accuracy_at_it_and_at_half(run):
    out, _ = run
    results = json.loads((out / "results.json").read_text())
    saved = read_threshold(out, "best")
    assert saved["rule"] == "youden" and saved["value"] == results["threshold"]["value"]
    scores = json.loads((out / "scores.json").read_text())
    assert choose_threshold("youden", scores["val"])[0] == pytest.approx(saved["value"])
    y, p = np.asarray(scores["test"]["is_fake"]), np.asarray(scores["test"]["p_fake"])
    assert results["test"]["accuracy"] == pytest.approx(np.mean((p >= saved["value"]) == y))
    assert results["test"]["accuracy_at_0.5"] == pytest.approx(np.mean((p >= 0.5) == y))


@pytest.mark.slow
def test_the_threshold_names_the_weights_it_was_chosen_for_and_other_weights_refuse_it(run, tmp_path, capsys):
    from llava_df.model.checkpoint import weights_identity

    out, images = run
    saved, best = read_threshold(out, "best"), weights_identity(out / "best")
    assert (
        saved["step"] == best["step"]
        and saved["weights_sha256"] == best["sha256"]
        and len(best["sha256"]) == 64
    )
    # An old run's threshold.json beside these weights (what an interrupted --overwrite_output_dir could leave).
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    stale = saved | {"step": 99, "weights_sha256": "0" * 64}
    (copy / "threshold.json").write_text(json.dumps(stale))
    with pytest.raises(SystemExit) as info:
        predict_main(["--run_dir", str(copy), str(images)])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        info.value.code == 1
        and err[-1].startswith("error: ")
        and "was chosen for other weights (step 99" in err[-1]
    )
    assert f"step {best['step']}, weights sha256 {best['sha256'][:12]}" in err[-1]
    rows = predict_main(
        ["--run_dir", str(copy), str(images), "--threshold", "0.5"]
    )  # an explicit cut still works
    assert rows and rows[0]["threshold_source"] == "--threshold"


@pytest.mark.slow
def test_labels_follow_the_saved_threshold_unless_one_is_given(run):
    out, images = run
    saved = read_threshold(out)["value"]
    rows = predict_main(["--run_dir", str(out), str(images)])
    assert all((r["label"] == "Fake") == (r["p_fake"] >= saved) for r in rows)
    assert all(r["threshold"] == saved and "youden" in r["threshold_source"] for r in rows)
    rows = predict_main(["--run_dir", str(out), str(images), "--threshold", "0"])
    assert {r["label"] for r in rows} == {"Fake"} and rows[0]["threshold_source"] == "--threshold"


@pytest.mark.slow
def test_generate_returns_parsed_answers_and_their_agreement(run, tmp_path):
    out, images = run
    files = sorted(images.glob("*.png"))[:3]
    rows = predict_main(
        ["--run_dir", str(out), *map(str, files), "--generate", "--max_new_tokens", "4",
         "--prompt", "<image>\nIs this face real or fake? Explain why.", "--output", str(tmp_path / "g.jsonl")]
    )  # fmt: skip
    assert len(rows) == 3
    for row in rows:
        assert isinstance(row["answer"], str) and row["answer_parsed"] in ("Real", "Fake", "unparseable")
        assert (
            row["answer_agrees"] is None
            if row["answer_parsed"] == "unparseable"
            else isinstance(row["answer_agrees"], bool)
        )
    lines = (tmp_path / "g.jsonl").read_text().splitlines()
    assert [json.loads(x)["answer"] for x in lines] == [r["answer"] for r in rows]


def test_parse_answer():
    assert parse_answer("Fake.") == "Fake" and parse_answer("real, because the skin is smooth") == "Real"
    assert parse_answer("I think it is fake") == "Fake"
    assert parse_answer("It is either real or fake") is None and parse_answer("") is None


def test_threshold_rules():
    scores = {"is_fake": [0, 0, 0, 1, 1, 1], "p_fake": [0.1, 0.2, 0.6, 0.4, 0.7, 0.9]}
    eer, _ = choose_threshold("eer", scores)
    youden, _ = choose_threshold("youden", scores)
    assert 0.1 < eer <= 0.7 and youden in (0.4, 0.7)
    assert choose_threshold("fixed:0.3", scores) == (0.3, "fixed:0.3")
    assert choose_threshold("eer", {"is_fake": [0, 0], "p_fake": [0.1, 0.2]})[0] == 0.5
    for bad in ("median", "fixed:2", "fixed:x"):
        with pytest.raises(UsageError, match="expected eer"):
            parse_threshold_rule(bad)


@pytest.mark.slow
def test_skipped_files_and_size_warnings_are_rows_of_the_output_and_on_stderr(run, tmp_path, capsys):
    from PIL import Image

    out, images = run
    mixed = tmp_path / "mixed"
    shutil.copytree(images, mixed)
    (mixed / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (1, 1), (128, 100, 90)).save(mixed / "tiny.png")
    Image.new("RGB", (4000, 2), (128, 100, 90)).save(mixed / "strip.png")
    rows = predict_main(["--run_dir", str(out), str(mixed), "--output", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    n_good = len(list(images.glob("*.png")))
    assert len(rows) == n_good + 3 and sum(r["skipped"] is None for r in rows) == n_good + 2
    with open(tmp_path / "p.csv") as f:
        written = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    broken = written["broken.png"]
    assert (
        broken["p_fake"] == "" and broken["label"] == "" and "no image format PIL reads" in broken["skipped"]
    )
    assert f"skipped {mixed / 'broken.png'}: no image format PIL reads" in err
    assert "under half the model's 64x64 input" in written["tiny.png"]["warning"]
    assert "aspect ratio beyond 4:1" in written["strip.png"]["warning"]
    assert float(written["strip.png"]["p_fake"]) >= 0 and written["strip.png"]["skipped"] == ""
    assert f"warning {mixed / 'tiny.png'}: 1x1 is under half" in err
    assert f"warning {mixed / 'strip.png'}: 4000x2" in err and "2 with a size warning" in err
    assert all(r["warning"] == "" for name, r in written.items() if name not in ("tiny.png", "strip.png"))


@pytest.mark.slow
def test_a_symlinked_folder_is_scored_once(run, tmp_path):
    out, images = run
    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "linked").symlink_to(images, target_is_directory=True)
    (faces / "loop").symlink_to(faces, target_is_directory=True)
    rows = predict_main(["--run_dir", str(out), str(faces)])
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in images.glob("*.png"))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d, imgs: ["--run_dir", str(d / "no_weights"), str(imgs)], "has no trained weights in best/"),
        (
            lambda d, imgs: ["--run_dir", str(d / "run"), str(d / "corrupt.png")],
            "none of the 1 images could be read",
        ),
        (lambda d, imgs: ["--run_dir", str(d / "run"), str(d / "empty")], "has no images"),
        (
            lambda d, imgs: ["--run_dir", str(d / "run"), str(imgs), "--threshold", "1.5"],
            "expected a probability in [0, 1]",
        ),
        (
            lambda d, imgs: ["--run_dir", str(d / "run"), str(imgs), "--output", str(d / "p.txt")],
            "expected a .csv or .jsonl",
        ),
        (lambda d, imgs: ["--run_dir", str(d / "run"), str(d / "nope*.png")], "matches no file"),
    ],
)
def test_bad_input_is_one_error_line_and_nothing_is_written(make, message, tmp_path, capsys):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (8, 8)).save(imgs / "a.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "empty").mkdir()
    for name in ("run", "no_weights"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run_config.json").write_text(
            json.dumps({"data": {}, "training": {}, "model": {}})
        )
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as info:
        predict_main(make(tmp_path, imgs))
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code in (1, 2) and err[-1].startswith("error: ") and message in err[-1]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_port_in_use_is_refused_before_the_model_loads():
    from llava_df.apps.demo_flags import check_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"--port {port} on 127.0.0.1 is not free"):
            check_port("127.0.0.1", port)


@pytest.mark.slow
def test_merged_checkpoint_predicts_like_its_run(run, tmp_path):
    from llava_df.apps.merge import main as merge_main

    out, images = run
    merge_main(["--run_dir", str(out), "--output_dir", str(tmp_path / "merged")])
    files = [str(p) for p in sorted(images.glob("*.png"))[:4]]
    merged = predict_main(["--model_dir", str(tmp_path / "merged"), *files])
    direct = predict_main(["--run_dir", str(out), *files])
    assert [r["threshold"] for r in merged] == [r["threshold"] for r in direct]
    for a, b in zip(merged, direct, strict=True):
        assert abs(a["p_fake"] - b["p_fake"]) < 1e-4


@pytest.mark.slow
def test_a_merged_kan_detector_loads_with_from_pretrained_and_scores_like_its_run(run, tmp_path):
    """A KAN projector has no Hugging Face class: the merged folder still loads the way every HF model
    loads (Detector.from_pretrained), with its threshold, and scores exactly as the run did."""
    from llava_df.eval.detector import Detector
    from llava_df.model.anatomy import projector

    _, images = run
    kan_run = tmp_path / "kan"
    train_main(
        ["--output_dir", str(kan_run), "--max_steps", "4", "--synthetic_n", "80", "--report_to", "none",
         "--per_device_train_batch_size", "8", "--eval_strategy", "steps", "--eval_steps", "2",
         "--save_strategy", "no", "--lora_enable", "True", "--lora_r", "4", "--mm_projector_type", "kan_h64_g3_k2"]
    )  # fmt: skip
    direct = Detector.from_pretrained(kan_run)
    merged_dir = Detector.from_pretrained(kan_run, bits=16).save_pretrained(tmp_path / "merged")
    assert (merged_dir / "mm_projector.safetensors").is_file()  # the KAN, beside HF's weights
    merged = Detector.from_pretrained(merged_dir)
    assert type(projector(merged.model)) is type(projector(direct.model))  # KANProjector both
    assert merged.threshold == direct.threshold and merged.weights == direct.weights
    files = [str(p) for p in sorted(images.glob("*.png"))[:6]]
    np.testing.assert_allclose(merged.score(files), direct.score(files), atol=1e-5)


# ---- the demo page: predict's numbers, for any image mode --------------------------------------
def _non_rgb_copies(image: Path, folder: Path) -> list[Path]:
    """The same face as RGBA (half transparent), 16-bit grayscale, float (mode F TIFF) and CMYK files."""
    from PIL import Image

    folder.mkdir()
    rgb = Image.open(image).convert("RGB")
    gray = np.asarray(rgb.convert("L"), dtype=np.float64)
    alpha = Image.fromarray(
        np.linspace(40, 255, rgb.width * rgb.height).reshape(rgb.height, rgb.width).astype(np.uint8)
    )
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    files = {
        "rgba.png": rgba,
        "gray16.png": Image.fromarray((gray * 257).astype(np.uint16)),  # I;16
        "float.tif": Image.fromarray((gray / 255.0).astype(np.float32), mode="F"),
        "cmyk.jpg": rgb.convert("CMYK"),
    }
    for name, im in files.items():
        im.save(folder / name)
    return [folder / name for name in files]


@pytest.fixture(scope="module")
def detector(run):
    from llava_df.apps.predict import load_detector

    return load_detector(str(run[0]))


@pytest.mark.slow
def test_the_demo_shows_predicts_p_fake_for_rgba_16_bit_float_and_cmyk_uploads(run, detector, tmp_path):
    from PIL import Image
    from test_demo import demo_server, detect, files_under, upload

    from llava_df.data.images import load_rgb

    out, images = run
    files = _non_rgb_copies(sorted(images.glob("*.png"))[0], tmp_path / "files")
    assert {Image.open(f).mode for f in files} == {"RGBA", "I;16", "F", "CMYK"}
    # Gradio's image preprocessing converted with a plain convert("RGB"): other pixels for these three
    # (CMYK converts alike, but Gradio re-encoded its converted copy, a second lossy JPEG).
    for f in files[:3]:
        assert not np.array_equal(np.asarray(Image.open(f).convert("RGB")), np.asarray(load_rgb(f)))
    expected = {Path(r["path"]).name: r for r in predict_main(["--run_dir", str(out), *map(str, files)])}
    uploads = tmp_path / "gradio"
    with demo_server(detector, uploads) as base:
        for f in files:
            [stored] = upload(base, f).json()
            kind, shown = detect(base, stored, f.name)
            assert kind == "complete", shown
            p_fake, label, threshold, _, warning = shown
            assert math.isclose(float(p_fake), expected[f.name]["p_fake"], abs_tol=1e-6), f.name
            assert label == expected[f.name]["label"] and warning == ""
            assert float(threshold.split()[0]) == pytest.approx(expected[f.name]["threshold"])
    assert files_under(uploads) == []  # every upload deleted once answered


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_demo_page_shows_predicts_probability_in_a_real_browser(run, detector, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[dev]')")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = _browser()
    if executable is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); .ci/run installs it")
    from test_demo import demo_server, files_under

    out, images = run
    # RGBA: a mode Gradio's image preprocessing used to convert its own way before predict's code saw it.
    upload = _non_rgb_copies(sorted(images.glob("*.png"))[0], tmp_path / "files")[0]
    expected = predict_main(["--run_dir", str(out), str(upload)])[0]
    uploads = tmp_path / "gradio"
    with demo_server(detector, uploads) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{base}/", wait_until="networkidle")
        page.set_input_files("#image input[type=file]", str(upload))
        page.wait_for_timeout(500)
        page.click("#detect")
        page.wait_for_function(
            "() => document.querySelector('#p_fake textarea, #p_fake input').value !== ''", timeout=60_000
        )
        shown = page.locator("#p_fake textarea, #p_fake input").first.input_value()
        label = page.locator("#label textarea, #label input").first.input_value()
        browser.close()
    assert math.isclose(float(shown), expected["p_fake"], abs_tol=1e-6)
    assert label == expected["label"]
    assert files_under(uploads) == []  # the upload is deleted once answered, the original included


def test_a_bad_threshold_rule_is_refused_at_parse_time():
    from llava_df.errors import ConfigError
    from llava_df.spec.resolve import parse_spec

    with pytest.raises(ConfigError, match="--threshold_rule 'median': expected eer"):
        parse_spec(["--threshold_rule", "median"])
    assert parse_spec(["--threshold_rule", "fixed:0.3"]).training.threshold_rule == "fixed:0.3"
