"""The demo page without a trained model: what happens to an upload that is not an image, too large to
decode, or over the upload limit. It is refused with the project's own message and deleted.

The HTTP helpers here drive the page the way its browser does (Gradio's upload route, then the
`detect` event through Gradio's documented REST API); test_predict.py uses them with a trained run.
"""

from __future__ import annotations

import json
import os
import socket
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[dev]')")
httpx = pytest.importorskip("httpx", reason="httpx (a gradio dependency) is not installed")

from llava_df.apps.demo import answer, build_app, serve  # noqa: E402

API = "gradio_api"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def demo_server(detector, upload_folder: Path, max_upload_mb: float = 25):
    """The demo page on a free local port, its uploads in ``upload_folder``; yields the base URL."""
    os.environ["GRADIO_TEMP_DIR"] = str(upload_folder)  # read when the app and its components are built
    try:
        app = build_app(detector)
        port = _free_port()
        serve(app, "127.0.0.1", port, max_upload_mb, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            app.close()
    finally:
        os.environ.pop("GRADIO_TEMP_DIR", None)


def upload(base: str, file: Path) -> httpx.Response:
    """POST ``file`` to Gradio's upload route, as the page does when a file is dropped on it."""
    with file.open("rb") as f:
        return httpx.post(f"{base}/{API}/upload", files={"files": (file.name, f)}, timeout=60)


def detect(base: str, stored: str, name: str) -> tuple[str, object]:
    """Run the page's Detect on an uploaded file: ("complete", outputs) or ("error", message)."""
    payload = {"data": [{"path": stored, "orig_name": name, "meta": {"_type": "gradio.FileData"}}, False, ""]}
    event = httpx.post(f"{base}/{API}/call/detect", json=payload, timeout=60).json()["event_id"]
    stream = httpx.get(f"{base}/{API}/call/detect/{event}", timeout=300).text
    kind, data = None, None
    for line in stream.splitlines():  # server-sent events: the last event is the answer
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: ") and kind in ("complete", "error"):
            data = json.loads(line[len("data: ") :])
    if kind == "error" and isinstance(data, dict):  # {"error": message, "title": ..., ...}
        data = data.get("error")
    return kind, data


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


def _stub_detector():
    """Enough of a Detector for build_app: the page is built, nothing is ever scored."""
    return types.SimpleNamespace(info={"run": "stub"}, data=types.SimpleNamespace(prompt="<image>\nReal?"))


def _as_gradio_stores_it(src: Path, folder: Path, name: str) -> dict:
    """The payload the Detect handler receives: the upload in its own folder under Gradio's."""
    stored = folder / "0123abcd" / name
    stored.parent.mkdir(parents=True)
    stored.write_bytes(src.read_bytes())
    return {"path": str(stored), "orig_name": name, "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("kind", ["not-an-image", "above-max-pixels"])
def test_an_unreadable_upload_gets_our_message_and_is_deleted(kind, tmp_path, monkeypatch):
    src = tmp_path / "src.png"
    if kind == "not-an-image":
        src.write_bytes(os.urandom(5000))
        expected = "face.png cannot be read as an image: no image format PIL reads recognises it."
    else:
        Image.new("1", (12000, 12000)).save(src)
        expected = "face.png cannot be read as an image: 12000x12000 is 144 megapixels, above the limit of 64"
    gradio_folder = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_folder))
    payload = _as_gradio_stores_it(src, gradio_folder, "face.png")
    with pytest.raises(gr.Error) as info:
        answer(_stub_detector(), payload, False, "")
    assert str(info.value.message).startswith(expected)
    assert str(gradio_folder) not in info.value.message  # no server path reaches the browser
    assert files_under(gradio_folder) == [] and not Path(payload["path"]).parent.exists()


def test_a_path_outside_the_upload_folder_is_neither_read_nor_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    precious = tmp_path / "precious.png"
    Image.new("RGB", (8, 8)).save(precious)
    for path in (str(precious), str(tmp_path / "gradio" / ".." / "precious.png")):
        with pytest.raises(gr.Error, match="Upload the image through this page"):
            answer(_stub_detector(), {"path": path, "orig_name": "x.png"}, False, "")
    assert precious.is_file()


def test_nothing_uploaded_asks_for_an_image():
    with pytest.raises(gr.Error, match="Upload a face image first"):
        answer(_stub_detector(), None, False, "")


def test_through_the_server_a_non_image_is_refused_in_our_words_and_no_longer_served(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(os.urandom(50_000))
    uploads = tmp_path / "gradio"
    with demo_server(_stub_detector(), uploads) as base:
        reply = upload(base, junk)
        assert reply.status_code == 200
        [stored] = reply.json()
        assert httpx.get(f"{base}/{API}/file={stored}").status_code == 200  # Gradio serves uploads back
        kind, message = detect(base, stored, "junk.png")
        assert kind == "error"
        assert message.startswith(
            "junk.png cannot be read as an image: no image format PIL reads recognises it"
        )
        assert str(tmp_path) not in message
        assert httpx.get(f"{base}/{API}/file={stored}").status_code != 200
    assert files_under(uploads) == []


def test_an_upload_over_the_limit_is_refused_and_nothing_is_kept(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    uploads = tmp_path / "gradio"
    with demo_server(_stub_detector(), uploads, max_upload_mb=1) as base:
        reply = upload(base, big)
    assert reply.status_code == 413 and "maximum allowed size" in reply.text
    assert files_under(uploads) == []


def test_a_request_naming_a_file_that_was_not_uploaded_deletes_nothing(tmp_path):
    # The handler deletes the file it is handed; Gradio hands it only files in its upload folder.
    precious = tmp_path / "precious.png"
    Image.new("RGB", (8, 8)).save(precious)
    with demo_server(_stub_detector(), tmp_path / "gradio") as base:
        kind, _ = detect(base, str(precious), "precious.png")
    assert kind == "error" and precious.read_bytes() != b"" and precious.is_file()
