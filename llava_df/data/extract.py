"""``llava-df data extract``: face crops from FF++ / Celeb-DF / DFDC / your own videos, as DeepfakeBench makes them.

How to call::

    llava-df data extract --dataset ffpp --root ~/data/FaceForensics++ --out data/rgb        # + --compression c23
    llava-df data extract --dataset celebdf --root ~/data/Celeb-DF-v2 --out data/rgb
    llava-df data extract --dataset dfdc --root ~/data/dfdc --out data/rgb --workers 8
    llava-df data extract --help                                                             # every flag
    llava-df train --data_dir data/rgb/FaceForensics++ ...                                   # then train on it

For each video (llava_df.data.video_layouts says which files, labels and official splits): the
frames at DeepfakeBench's evenly spaced indices (llava_df.data.video_frames), the largest face of
each cropped as DeepfakeBench crops it (llava_df.data.face_align), saved as
``OUT/<dataset>/<sub>/frames/<video>/<frame:03d>.png``. A frame without a face is left out, as
DeepfakeBench leaves it out, and named in the report. ``OUT/<dataset>/`` then holds:

- ``metadata.csv``: file_name, label, manipulation, split (the official one; empty for your own
  videos), group (``<dataset>:<method>:<video>``: a video's frames stay in one split, and are one
  video in the video-level metrics), frame;
- ``extract.json``: the settings (predict reads the crop recipe from it, to crop alike);
- ``extract_report.json`` and ``.txt``: every video and frame without a face, each video that could
  not be decoded, each file left out of the official split.

Resumable: each finished video leaves a marker in ``.extract/``; a second run with the same
settings skips those (an interrupted video is redone whole), a run with other settings is refused.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from tqdm.auto import tqdm

from llava_df.data.extract_args import ExtractArguments, check_args, methods_of, parse_extract
from llava_df.data.face_align import CropRecipe, FaceDetector, crop_face
from llava_df.data.labels import CLASS_NAMES
from llava_df.data.video_frames import frame_count, pick_indices, read_frames
from llava_df.data.video_layouts import Video, list_videos, out_name
from llava_df.errors import DataError, UsageError, cli_entry
from llava_df.io import write_json, write_text

logger = logging.getLogger(__name__)

SETTINGS_FILE = "extract.json"
REPORT_FILE = "extract_report.json"
MARKERS = ".extract"  # hidden: imagefolder does not index it
_DETECTOR: FaceDetector | None = None  # one per process (the worker pool's too)


def recipe_of(args: ExtractArguments) -> CropRecipe:
    return CropRecipe(args.crop, args.size, args.scale, args.margin, args.recheck)


def settings_of(args: ExtractArguments) -> dict:
    """What decides the crops: a resumed extraction must use the same."""
    out = {"dataset": args.dataset, "num_frames": args.num_frames, "crop": recipe_of(args).to_json()}
    if args.dataset == "ffpp":
        out |= {"compression": args.compression, "methods": args.methods}
    return out


def _marker(out: Path, video: Video) -> Path:
    return out / MARKERS / video.sub / f"{video.name}.json"


def _detector() -> FaceDetector:
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = FaceDetector()
    return _DETECTOR


def extract_video(video: Video, out: Path, recipe: CropRecipe, num_frames: int) -> dict:
    """Crop one video's picked frames into ``out/<sub>/frames/<name>/``; returns (and writes last) its marker.

    A video that cannot be decoded returns ``{"error": ...}`` and writes no marker: the next run tries again.
    """
    frames_dir = out / video.sub / "frames" / video.name
    shutil.rmtree(frames_dir, ignore_errors=True)  # what an interrupted try left
    result = {"video": str(video.path), "group": video.group, "picked": [], "saved": [], "no_face": [],
              "lost_after_align": [], "several_faces": {}, "not_decoded": []}  # fmt: skip
    try:
        wanted = pick_indices(frame_count(video.path), num_frames)
        result["picked"] = wanted
        got = set()
        for index, rgb in read_frames(video.path, wanted):
            got.add(index)
            found = crop_face(_detector(), rgb, recipe)
            if found.status != "ok":
                result[found.status].append(index)
                continue
            if found.faces > 1:
                result["several_faces"][str(index)] = found.faces
            frames_dir.mkdir(parents=True, exist_ok=True)
            found.image.save(frames_dir / f"{index:03d}.png")
            result["saved"].append(index)
        result["not_decoded"] = sorted(set(wanted) - got)  # a container that counts more frames than it holds
    except DataError as err:
        return result | {"error": str(err)}
    write_json(_marker(out, video), result)
    return result


def _done(out: Path, video: Video) -> dict | None:
    try:
        return json.loads(_marker(out, video).read_text())
    except (OSError, ValueError):
        return None


def _check_settings(out: Path, settings: dict) -> None:
    path = out / SETTINGS_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        if before != settings:
            changed = {
                k: (before.get(k), settings.get(k))
                for k in settings.keys() | before.keys()
                if before.get(k) != settings.get(k)
            }
            raise UsageError(
                f"{out} holds crops made with other settings ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items())}). "
                "Pass another --out, or delete that folder to start again."
            )
    write_json(path, settings)


def metadata_rows(out: Path, videos: list[Video], results: dict[str, dict]) -> list[dict]:
    """metadata.csv's rows: one per saved crop, in video order."""
    rows = []
    for v in videos:
        for index in results.get(v.group, {}).get("saved", []):
            rows.append({
                "file_name": f"{v.sub}/frames/{v.name}/{index:03d}.png", "label": CLASS_NAMES[v.is_fake],
                "manipulation": v.manipulation, "split": v.split or "", "group": v.group, "frame": index,
            })  # fmt: skip
    return rows


def write_metadata(out: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer,
        fieldnames=["file_name", "label", "manipulation", "split", "group", "frame"],
        lineterminator="\n",
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "metadata.csv", buffer.getvalue())


def build_report(
    settings: dict, videos: list[Video], results: dict[str, dict], failed: dict[str, str], notes: list[str]
) -> dict:
    """Every video and frame without a face, each failure and file left out, by name."""
    by_group = {v.group: v for v in videos}
    done = {g: r for g, r in results.items() if g in by_group}
    return {
        "settings": settings,
        "videos": len(videos),
        "videos_with_crops": sum(bool(r["saved"]) for r in done.values()),
        "crops": sum(len(r["saved"]) for r in done.values()),
        "videos_without_face": sorted(g for g, r in done.items() if not r["saved"]),
        "frames_without_face": {g: r["no_face"] for g, r in done.items() if r["no_face"]},
        "frames_lost_after_align": {
            g: r["lost_after_align"] for g, r in done.items() if r["lost_after_align"]
        },
        "frames_with_several_faces": {g: r["several_faces"] for g, r in done.items() if r["several_faces"]},
        "frames_not_decoded": {g: r["not_decoded"] for g, r in done.items() if r["not_decoded"]},
        "videos_failed": failed,
        "left_out": notes,
    }


def report_text(report: dict) -> str:
    lines = [
        f"{report['videos']} videos, {report['videos_with_crops']} with face crops, {report['crops']} crops "
        f"({json.dumps(report['settings'])})",
    ]
    for group in report["videos_without_face"]:
        lines.append(f"no face in any frame: {group}")
    for key, what in (("frames_without_face", "no face"), ("frames_lost_after_align", "face lost after alignment"),
                      ("frames_not_decoded", "not decoded")):  # fmt: skip
        for group, frames in report[key].items():
            lines.append(f"{what}: {group} frames {', '.join(map(str, frames))}")
    for group, frames in report["frames_with_several_faces"].items():
        lines.append(
            f"several faces (the largest kept): {group} "
            + ", ".join(f"frame {i}: {n}" for i, n in frames.items())
        )
    lines += [f"failed: {group}: {error}" for group, error in report["videos_failed"].items()]
    lines += [f"left out: {note}" for note in report["left_out"]]
    return "\n".join(lines) + "\n"


def extract(args: ExtractArguments) -> dict:
    """Run the extraction described by ``args``; returns the report (also written beside metadata.csv)."""
    check_args(args)
    videos, notes = list_videos(
        args.dataset, Path(args.root), compression=args.compression, methods=methods_of(args),
        split_dir=Path(args.splits) if args.splits else None,
    )  # fmt: skip
    out = Path(args.out) / out_name(args.dataset, Path(args.root))
    settings = settings_of(args)
    _check_settings(out, settings)
    recipe = recipe_of(args)
    results = {v.group: r for v in videos if (r := _done(out, v)) is not None}
    todo = [v for v in videos if v.group not in results]
    if len(todo) < len(videos):
        print(
            f"resuming: {len(videos) - len(todo)} of {len(videos)} videos already extracted in {out}",
            file=sys.stderr,
        )
    failed: dict[str, str] = {}
    bar = tqdm(total=len(todo), desc=f"extract {out.name}", unit="video")
    if args.workers == 1:
        outcomes = (extract_video(v, out, recipe, args.num_frames) for v in todo)
        pool = None
    else:  # spawn: a forked dlib/torch process is not safe; each worker loads its own detector
        pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"))
        outcomes = pool.map(
            functools.partial(extract_video, out=out, recipe=recipe, num_frames=args.num_frames), todo
        )
    try:
        for video, result in zip(todo, outcomes, strict=True):
            if "error" in result:
                failed[video.group] = result["error"]
            else:
                results[video.group] = result
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    write_metadata(out, metadata_rows(out, videos, results))
    report = build_report(settings, videos, results, failed, notes)
    write_json(out / REPORT_FILE, report)
    write_text(out / "extract_report.txt", report_text(report))
    print(report_text(report).split("\n")[0], file=sys.stderr)
    print(f"wrote {out / 'metadata.csv'} and {out / 'extract_report.txt'} ({len(report['videos_without_face'])} videos "
          f"without a face, {sum(map(len, report['frames_without_face'].values()))} frames without a face, "
          f"{len(failed)} failed)", file=sys.stderr)  # fmt: skip
    return report


@cli_entry
def main(argv: list[str]) -> dict:
    """``llava-df data extract ...`` (llava_df.data.__main__ runs the same, its flags checked first)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return extract(parse_extract(argv))
