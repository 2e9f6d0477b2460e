"""Label convention and robust image loading (llava_df.data.labels, llava_df.data.images)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from llava_df.data.images import ImageLoadError, LoadSummary, load_rgb, to_rgb
from llava_df.data.labels import (
    FAKE,
    REAL,
    is_fake_from_class_label,
    label_from_answer,
    label_mapping,
    parse_is_fake,
    parse_label,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("real", REAL),
        ("Fake", FAKE),
        (" FAKE ", FAKE),
        ("original", REAL),
        ("manipulated", FAKE),
        ("Pristine", REAL),
    ],
)
def test_parse_label_names(text, expected):
    assert parse_label(text) == expected


def test_parse_label_refuses_numbers_and_unknown_names():
    with pytest.raises(ValueError, match="ambiguous"):
        parse_label(0)
    with pytest.raises(ValueError, match=r"Unknown label 'reel' in row 3.*'fake'"):
        parse_label("reel", where="row 3")


def test_class_label_index_goes_through_the_name():
    # datasets sorts folder names: index 0 is "fake", which is this project's positive class 1.
    assert is_fake_from_class_label(0, ["fake", "real"]) == FAKE
    assert is_fake_from_class_label(1, ["fake", "real"]) == REAL
    assert is_fake_from_class_label(0, ["manipulated", "original"]) == FAKE
    with pytest.raises(ValueError, match="outside"):
        is_fake_from_class_label(2, ["fake", "real"])


def test_is_fake_and_answers():
    assert [parse_is_fake(v) for v in (0, 1, "1", True)] == [0, 1, 1, 1]
    with pytest.raises(ValueError, match="must be 0"):
        parse_is_fake(2)
    assert label_from_answer("Fake.", "Real", "Fake") == FAKE
    assert label_from_answer(" real", "Real", "Fake") == REAL
    with pytest.raises(ValueError, match="neither 'Real' nor 'Fake'"):
        label_from_answer("Maybe", "Real", "Fake", where="x.jsonl:3")


def test_label_mapping_is_what_a_run_saves():
    m = label_mapping("Genuine", "Forged")
    assert m["is_fake"] == {"real": 0, "fake": 1}
    assert m["positive_class"] == "fake"
    assert m["answers"] == {"real": "Genuine", "fake": "Forged"}


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_grayscale_and_palette_become_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    out = load_rgb(_save(Image.fromarray(gray, mode="L"), tmp_path / "g.png"))
    assert out.mode == "RGB" and out.size == (8, 8)
    assert np.array_equal(np.asarray(out)[..., 0], gray) and np.array_equal(np.asarray(out)[..., 2], gray)
    pal = Image.fromarray(gray, mode="L").convert("P")
    assert load_rgb(_save(pal, tmp_path / "p.png")).mode == "RGB"


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[0, 0, 3] = 0  # fully transparent
    rgba[1:, :, 3] = 255
    rgba[0, 1:, 3] = 128
    out = np.asarray(load_rgb(_save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "a.png")))
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[2, 2].tolist() == [200, 100, 50]
    assert 95 <= out[0, 2, 0] <= 105  # half-transparent: about half the colour


def test_16bit_grayscale_is_scaled(tmp_path):
    arr = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "d.png")  # a 16-bit PNG
    out = np.asarray(load_rgb(path))
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 128, 255, 4]


def test_float_and_cmyk_modes():
    f = Image.fromarray(np.full((2, 2), 0.5, np.float32), mode="F")
    assert np.asarray(to_rgb(f))[0, 0].tolist() == [128, 128, 128]
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 255, 255]


def test_corrupt_truncated_and_missing_files_raise_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="garbage.png"):
        load_rgb(garbage)
    rng = np.random.default_rng(0)
    full = tmp_path / "full.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    with pytest.raises(ImageLoadError, match="truncated.jpg"):
        load_rgb(truncated)
    png = tmp_path / "full.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(png)
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png.read_bytes()[:-200])
    with pytest.raises(ImageLoadError, match="cut.png"):
        load_rgb(cut_png)
    with pytest.raises(ImageLoadError, match="no such file"):
        load_rgb(tmp_path / "absent.png")


def test_load_summary_names_skipped_files_and_logs(caplog):
    s = LoadSummary(source="folder x", loaded=3)
    s.skip("a/bad.png", "OSError: truncated")
    with caplog.at_level(logging.WARNING, logger="llava_df.data.images"):
        s.log()
    assert "loaded 3, skipped 1" in s.line() and "a/bad.png (OSError: truncated)" in s.line()
    assert "a/bad.png" in caplog.text
