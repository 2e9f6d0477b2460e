"""predict's inputs and output file, checked before any model loads; the saved threshold's value; the demo's --host.

Nothing here trains: the scored cases (skipped rows and size warnings in the CSV, the demo's
P(Fake) against predict's) are in test_predict.py, which trains its run once.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from llava_df.apps.predict import main as predict_main
from llava_df.apps.predict import read_images, size_warning
from llava_df.apps.predict_flags import expand_inputs
from llava_df.data.images import MAX_PIXELS, ImageLoadError, load_rgb
from llava_df.errors import RunError, UsageError
from llava_df.eval.threshold import read_threshold


def _fake_run(folder: Path) -> Path:
    """A folder that passes predict's argument checks but holds no weights: loading it fails, so an
    error about anything else proves that check ran before the model would load."""
    folder.mkdir()
    (folder / "run_config.json").write_text(json.dumps({"data": {}, "training": {}, "model": {}}))
    return folder


# ---- --output -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make_output, message",
    [
        (lambda d: d / "out", "is a folder: expected a .csv or .jsonl file name"),
        (lambda d: d / "missing" / "p.csv", "folder {d}/missing does not exist"),
        (lambda d: d / "a.png" / "p.csv", "{d}/a.png is a file, not a folder"),
        (lambda d: d / "a.png" / "deeper" / "p.jsonl", "{d}/a.png is a file, not a folder"),
        (lambda d: Path("/sys/predictions.csv"), "cannot create files in /sys"),
    ],
    ids=["existing-folder", "missing-parent", "under-a-file", "deep-under-a-file", "unwritable"],
)
def test_a_bad_output_path_is_one_error_line_before_anything_is_read(make_output, message, tmp_path, capsys):
    if make_output(tmp_path) == Path("/sys/predictions.csv"):
        try:
            with tempfile.TemporaryFile(dir="/sys"):
                pytest.skip("/sys takes files on this machine: no unwritable folder to test with")
        except OSError:
            pass
    (tmp_path / "out").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    run = _fake_run(tmp_path / "run")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as info:
        predict_main(["--run_dir", str(run), str(tmp_path / "a.png"), "--output", str(make_output(tmp_path))])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: --output ")
    assert message.format(d=tmp_path) in err[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, no .tmp left


# ---- folders, symlinks ----------------------------------------------------------------------
def test_symlinked_folders_are_searched_once_each_and_loops_end(tmp_path):
    faces, elsewhere = tmp_path / "faces", tmp_path / "elsewhere"
    (faces / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (faces / "a.png", faces / "sub" / "b.png", elsewhere / "c.png"):
        Image.new("RGB", (8, 8)).save(path)
    (faces / "linked").symlink_to(elsewhere, target_is_directory=True)  # followed, like a glob's **
    (faces / "sub" / "loop").symlink_to(faces, target_is_directory=True)  # back to the top: not walked again
    (faces / "again").symlink_to(elsewhere, target_is_directory=True)  # the same folder a second time
    paths, notes = expand_inputs([str(faces)])
    # Walked in name order: again/ is the first way to elsewhere/, so linked/ is the repeat.
    assert [os.path.relpath(p, faces) for p in paths] == ["a.png", "again/c.png", "sub/b.png"]
    assert len(notes) == 1 and "2 folders already searched" in notes[0]
    # The same folder given twice (here once through a link) is searched once.
    paths_twice, notes_twice = expand_inputs([str(elsewhere), str(faces / "linked")])
    assert paths_twice == [str(elsewhere / "c.png")] and "already searched" in notes_twice[0]


# ---- decoding: once, with a pixel limit -----------------------------------------------------
def test_an_image_above_max_pixels_is_skipped_from_its_header_never_decoded(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("1", (12000, 12000)).save(big)  # 144 MP in a small file: a decompression bomb
    bomb = tmp_path / "bomb.png"
    Image.new("1", (14000, 14000)).save(bomb)  # beyond PIL's own limit too (2x 89.5 MP)
    assert MAX_PIXELS < 12000 * 12000
    decoded = []
    original_load = ImageFile.ImageFile.load  # what every file format's decode goes through
    monkeypatch.setattr(
        ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or original_load(self)
    )
    good, skipped = read_images([str(big), str(bomb)])
    assert good == [] and decoded == []
    reasons = dict(skipped)
    assert "12000x12000 is 144 megapixels, above the limit of 64" in reasons[str(big)]
    assert "above the limit of 64" in reasons[str(bomb)] and "MAX_PIXELS" in reasons[str(bomb)]
    assert all(str(tmp_path) not in r for r in reasons.values())  # the demo shows reasons to a browser


def test_unreadable_reasons_name_no_path(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(os.urandom(4000))
    with pytest.raises(ImageLoadError) as info:
        load_rgb(junk)
    assert "junk.png" in str(info.value)  # the error names the file ...
    assert info.value.reason == "no image format PIL reads recognises it"  # ... its reason does not


def test_size_warnings():
    assert size_warning(64, 64, (64, 64)) is None and size_warning(32, 40, (64, 64)) is None
    assert "1x1 is under half the model's 64x64 input" in size_warning(1, 1, (64, 64))
    strip = size_warning(4000, 2, (64, 64))
    assert "under half" in strip and "aspect ratio beyond 4:1" in strip
    assert "aspect ratio" in size_warning(1000, 200, None)


# ---- threshold.json -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, shown",
    [
        ("true", "true"),
        ('"0.5"', '"0.5"'),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("1.5", "1.5"),
        ("-0.1", "-0.1"),
    ],
)
def test_a_saved_threshold_that_is_no_probability_is_called_so(text, shown, tmp_path):
    (tmp_path / "threshold.json").write_text(f'{{"value": {text}, "rule": "eer", "weights": "best"}}')
    with pytest.raises(
        RunError, match=rf"value {shown} is not a probability in \[0, 1\]; pass --threshold P"
    ):
        read_threshold(tmp_path, "best")


def test_a_saved_threshold_that_is_unreadable_or_valid(tmp_path):
    (tmp_path / "threshold.json").write_text('{"rule": "eer"}')
    with pytest.raises(RunError, match="is unreadable"):
        read_threshold(tmp_path)
    (tmp_path / "threshold.json").write_text('{"value": 1, "rule": "fixed:1", "weights": "best"}')
    assert read_threshold(tmp_path, "best")["value"] == 1


# ---- the demo's --host ----------------------------------------------------------------------
def test_an_invalid_host_is_named_not_blamed_on_the_port():
    from llava_df.apps.demo_flags import check_port

    with pytest.raises(UsageError, match="--host 999.1.1.1: not a valid IP address"):
        check_port("999.1.1.1", 7860)
    with pytest.raises(UsageError, match="--host 192.0.2.1 is not an address of this machine"):
        check_port("192.0.2.1", 7860)  # TEST-NET-1: never this machine's; binding sends nothing


def _free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def test_ipv6_loopback_is_accepted_and_a_busy_ipv6_port_is_refused():
    from llava_df.apps.demo_flags import check_port

    try:
        port = _free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    check_port("::1", port)
    with socket.socket(socket.AF_INET6) as busy:
        busy.bind(("::1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"--port {taken} on ::1 is not free .*another server uses it"):
            check_port("::1", taken)


def test_demo_main_ends_a_bad_host_in_one_error_line(tmp_path, capsys):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[dev]')")
    from llava_df.apps.demo import main as demo_main

    with pytest.raises(SystemExit) as info:
        demo_main(["--run_dir", str(_fake_run(tmp_path / "run")), "--host", "999.1.1.1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        info.value.code == 2 and err == [err[0]] and err[0].startswith("error: --host 999.1.1.1: not a valid")
    )
