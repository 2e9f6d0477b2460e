"""`llava-df data extract` and the face check of predict, on a real face a package ships (scikit-image's
astronaut): DeepfakeBench's frame pick, its alignment math, the detector, resumable extraction with its report."""

from __future__ import annotations

import json
import shutil
from importlib.util import find_spec

import numpy as np
import pytest

from llava_df.data.face_align import arcface_target, faces_available, similarity_transform, warp_affine
from llava_df.data.video_frames import pick_indices
from llava_df.data.video_layouts import celebdf_test_list, ffpp_splits
from llava_df.errors import DataError, UsageError

skimage = pytest.importorskip("skimage", reason="scikit-image (a dev dependency) ships the astronaut photo")
needs_faces = pytest.mark.skipif(
    not (faces_available() and find_spec("av")),
    reason="needs the [faces] extra: pip install -e '.[faces]' (av, dlib-bin, face_recognition_models)",
)


def test_frames_are_deepfakebenchs_linspace_pick():
    assert pick_indices(300, 32) == sorted({int(i) for i in np.linspace(0, 299, 32, dtype=int)})
    assert pick_indices(300, 32)[:3] == [0, 9, 19] and pick_indices(300, 32)[-1] == 299
    assert pick_indices(10, 32) == list(range(10))  # a short video: each frame once
    assert pick_indices(7, 3) == [0, 3, 6] and pick_indices(0, 32) == []


def test_alignment_is_deepfakebenchs_template_umeyama_and_warp():
    from skimage import transform
    from video_trees import photo

    # img_align_crop at 256 px, scale 1.3: x = ((30.2946 + 8) * 256/112 + 38.4) * 256/332.8
    assert arcface_target()[0] == pytest.approx(
        [((30.2946 + 8) * 256 / 112 + 38.4) * 256 / 332.8, (51.6963 * 256 / 112 + 38.4) * 256 / 332.8]
    )
    # The astronaut's five DeepfakeBench points (68-point landmarks 37, 44, 30, 49, 55, measured with dlib once).
    src, dst = np.array([[200, 98], [243, 100], [225, 127], [209, 139], [246, 141]], float), arcface_target()
    reference = transform.SimilarityTransform.from_estimate(src, dst).params
    assert np.abs(similarity_transform(src, dst) - reference).max() < 1e-4
    image = photo("astronaut")
    warped = np.asarray(warp_affine(image, reference, 256)).astype(float)
    sk = transform.warp(
        image, np.linalg.inv(reference), output_shape=(256, 256), order=1, preserve_range=True
    )
    assert np.abs(warped - sk)[2:-2, 2:-2].max() <= 1.0  # OpenCV's/skimage's pixel centres, to rounding


def test_official_split_files_are_read_as_faceforensics_means_them(tmp_path):
    for split, pairs in {
        "train": [["000", "003"]],
        "val": [["001", "002"]],
        "test": [["953", "974"]],
    }.items():
        (tmp_path / f"{split}.json").write_text(json.dumps(pairs))
    splits = ffpp_splits(tmp_path)
    assert {k for k, v in splits.items() if v == "test"} == {"953", "974", "953_974", "974_953"}
    (tmp_path / "val.json").write_text(json.dumps([["000", "002"]]))
    with pytest.raises(DataError, match="video 000 is also in the train split"):
        ffpp_splits(tmp_path)
    (tmp_path / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00170.mp4\n1 Celeb-synthesis/id0_id1_0000.mp4\n"
    )
    with pytest.raises(
        DataError, match=r"List_of_testing_videos.txt:2: Celeb-synthesis/id0_id1_0000.mp4 is labelled real"
    ):
        celebdf_test_list(tmp_path / "List_of_testing_videos.txt")


@needs_faces
def test_the_detector_keeps_the_largest_face_of_a_real_photo():
    from video_trees import photo

    from llava_df.data.face_align import CropRecipe, FaceDetector, crop_face

    detector = FaceDetector()
    boxes = detector.boxes(
        photo("astronaut")
    )  # upsampled once, as DeepfakeBench: her face and a patch of the suit
    assert len(boxes) == 2 and boxes[0].left == 175 and boxes[0].top == 76 and boxes[0].area > boxes[1].area
    assert detector.landmarks(photo("astronaut"), boxes[0]).shape == (68, 2)
    found = crop_face(detector, photo("astronaut"), CropRecipe())
    assert found.status == "ok" and found.faces == 2 and found.image.size == (256, 256)
    assert crop_face(detector, photo("chelsea"), CropRecipe()).status == "no_face"  # a cat
    assert crop_face(detector, photo("astronaut"), CropRecipe(kind="margin", size=128)).image.size == (
        128,
        128,
    )


@needs_faces
def test_extract_writes_deepfakebenchs_tree_names_what_has_no_face_and_resumes(tmp_path, capsys):
    from video_trees import astronaut, manipulated, no_face_video, write

    from llava_df.data.extract import main
    from llava_df.data.folder import load_folder_records

    root = tmp_path / "mine"
    write(root / "real" / "astronaut.mp4", astronaut(), 1, 7)
    write(root / "fake" / "self_blend" / "blended.mp4", manipulated("self_blend", 2), 2, 7)
    no_face_video(root / "real" / "cup.mp4", 5)
    argv = ["--dataset", "videos", "--root", str(root), "--out", str(tmp_path / "rgb"), "--num_frames", "3"]
    report = main(argv)
    out = tmp_path / "rgb" / "mine"
    assert sorted(p.name for p in (out / "real" / "frames" / "astronaut").iterdir()) == [
        "000.png",
        "003.png",
        "006.png",
    ]
    assert (out / "fake" / "self_blend" / "frames" / "blended" / "006.png").is_file()
    assert report["videos_without_face"] == ["mine:real:cup"] and report["frames_without_face"] == {
        "mine:real:cup": [0, 2, 4]
    }
    assert "no face in any frame: mine:real:cup" in (out / "extract_report.txt").read_text()
    records, _ = load_folder_records(out)
    assert len(records) == 6 and {r.group for r in records} == {
        "mine:real:astronaut",
        "mine:self_blend:blended",
    }
    assert {r.manipulation for r in records if r.is_fake} == {"self_blend"} and {
        r.split for r in records
    } == {None}
    metadata = (out / "metadata.csv").read_text()
    # A second run skips what is done; an interrupted video (no marker, a stray crop) is redone whole.
    marker = out / ".extract" / "real" / "astronaut.json"
    marker.unlink()
    shutil.copy(
        out / "real" / "frames" / "astronaut" / "000.png", out / "real" / "frames" / "astronaut" / "001.png"
    )
    capsys.readouterr()
    assert main(argv)["crops"] == 6
    assert "resuming: 2 of 3 videos already extracted" in capsys.readouterr().err
    assert marker.is_file() and not (out / "real" / "frames" / "astronaut" / "001.png").exists()
    assert (out / "metadata.csv").read_text() == metadata
    with pytest.raises(SystemExit) as stop:
        main([*argv[:-1], "4"])  # other settings into the same folder
    assert (
        stop.value.code == 2
        and "holds crops made with other settings (num_frames: 3 -> 4)" in capsys.readouterr().err
    )
    with pytest.raises(UsageError, match="--num_frames 0"):
        from llava_df.data.extract import ExtractArguments, extract

        extract(ExtractArguments("videos", str(root), str(tmp_path / "o"), num_frames=0))


@needs_faces
def test_predicts_face_check_crops_like_the_training_data_and_warns(tmp_path):
    from PIL import Image
    from video_trees import photo

    from llava_df.apps.face_check import FaceCheck, check_mode, face_check, run_recipe
    from llava_df.apps.predict import ImageInput
    from llava_df.spec.args import DataArguments

    photos = {
        "face": photo("astronaut")[:300, 100:400],
        "two": np.concatenate([photo("astronaut")[:260, 120:330]] * 2, 1),
        "cat": photo("chelsea"),
    }
    images = []
    for name, pixels in photos.items():
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp_path / f"{name}.png")
        images.append(ImageInput(str(tmp_path / f"{name}.png")))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "extract.json").write_text(
        json.dumps({"crop": {"kind": "margin", "size": 128, "margin": 0.2}})
    )
    recipe, source = run_recipe(DataArguments(data_dir=str(tmp_path / "data")))
    assert (recipe.kind, recipe.size, recipe.margin) == ("margin", 128, 0.2) and "extract.json" in source
    assert run_recipe(DataArguments())[0] is None  # the synthetic benchmark: no crop, faces still checked
    (tmp_path / "crops").mkdir()
    checked = face_check("auto", DataArguments(data_dir=str(tmp_path / "data"))).prepare(
        images, tmp_path / "crops"
    )
    assert [c.faces for c in checked] == [1, 2, 0]
    assert checked[0].warning is None and Image.open(checked[0].path).size == (128, 128)
    assert checked[1].warning == "2 faces found: the largest was cropped and scored"
    assert checked[2].path == images[2].path and checked[2].warning.startswith(
        "no face found: scored the whole image"
    )
    only = FaceCheck(None, "--face_crop none").prepare(images, tmp_path / "crops")
    assert [c.path for c in only] == [im.path for im in images] and only[2].scored == "whole image"
    assert face_check("off", DataArguments()) is None
    with pytest.raises(
        UsageError, match="--face_crop 'crop': expected one of auto, align, margin, none, off"
    ):
        check_mode("crop")
