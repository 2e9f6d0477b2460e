"""Video frames with PyAV: the frame indices DeepfakeBench picks, decoded exactly, and mp4 writing.

How to call::

    indices = pick_indices(frame_count("v.mp4"), 32)    # DeepfakeBench's np.linspace pick, each index once
    for index, rgb in read_frames("v.mp4", indices):    # (frame index, uint8 [H, W, 3]) in video order
        ...
    write_video("v.mp4", frames, fps=25)                # uint8 [H, W, 3] frames -> H.264 mp4 (tests, docs)

PyAV (``av``, the ``[faces]`` extra) bundles FFmpeg's codecs in its wheels, so nothing else is
installed. Frames are counted from the container's frame count, as OpenCV's CAP_PROP_FRAME_COUNT
(what DeepfakeBench's preprocess reads) does, and by decoding when the container does not say.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from llava_df.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
NEEDS_AV = "reading videos needs PyAV, which is not installed: pip install -e '.[faces]'"


def _av():
    try:
        import av  # lazy: PyAV is the optional [faces] extra; the rest of llava_df runs without it
    except ImportError:
        raise DataError(NEEDS_AV) from None
    return av


def pick_indices(frame_count: int, num_frames: int) -> list[int]:
    """DeepfakeBench's ``fixed_num_frames`` pick: ``np.linspace(0, n - 1, num, endpoint=True, dtype=int)``.

    Sorted, each index once (a video shorter than ``num_frames`` repeats indices in the linspace,
    and DeepfakeBench saves each frame once: it tests ``cnt_frame in frame_idxs``).
    """
    if frame_count <= 0:
        return []
    picked = np.linspace(0, frame_count - 1, num_frames, endpoint=True, dtype=int)
    return sorted(set(int(i) for i in picked))


def frame_count(path: str | Path) -> int:
    """Frames in the first video stream: the container's count, else the frames it decodes to."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream. Pass video files (mp4, avi, mov, mkv, webm).")
            stream = container.streams.video[0]
            if stream.frames > 0:
                return int(stream.frames)
            return sum(1 for _ in container.decode(stream))
    except av.error.FFmpegError as err:
        raise DataError(f"{path}: cannot be read as a video ({err}).") from None


def read_frames(path: str | Path, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB uint8 [H, W, 3]) of each wanted frame, decoding in order and stopping after the last.

    Indices past the end of the stream (a container that over-counts) are not yielded; the caller
    compares what came back with what it asked for.
    """
    wanted = sorted(set(indices))
    if not wanted:
        return
    av = _av()
    last, want = wanted[-1], set(wanted)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for i, frame in enumerate(container.decode(stream)):
                if i in want:
                    yield i, frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except av.error.FFmpegError as err:
        raise DataError(f"{path}: decoding stopped ({err}).") from None


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int = 25, crf: int = 18) -> Path:
    """uint8 RGB frames [H, W, 3] (even sides) -> an H.264 mp4 (yuv420p, ``crf``: 0 lossless .. 51)."""
    av = _av()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf)})
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            ):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"{path}: no frames to write.")
        for packet in stream.encode():
            container.mux(packet)
    return path
