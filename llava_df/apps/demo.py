"""``llava-df demo``: a local web page that says whether an uploaded face is fake (Gradio).

How to call::

    llava-df demo --run_dir outputs/run [--weights best] [--port 7860] [--threshold 0.5]
    llava-df demo --model_dir outputs/run-merged
    # then open http://127.0.0.1:7860
    llava-df demo --help                    # every flag, with its default

The page shows P(Fake) with the label at the run's threshold (``threshold.json``, or
``--threshold``), the model's generated answer on request, and the run's name, projector and
strategy. The numbers are ``llava-df predict``'s: the same detector and scoring code.

Privacy: it binds to 127.0.0.1 unless ``--host`` says otherwise (an IPv4 or IPv6 address of this
machine, or a name it resolves), never creates a public share link, refuses uploads over
``--max_upload_mb``, and deletes each upload (the file Gradio stored, in its upload folder) as
soon as the request is answered; an upload never sent for detection is deleted by Gradio's own
cache cleaning (every 5 minutes, those older than 5 minutes).

The upload reaches ``llava_df.data.images`` as sent, byte for byte: the click handler runs with
Gradio's preprocessing off, so Gradio never converts it (its plain ``convert("RGB")`` would differ
from predict's conversion of RGBA, 16-bit, float and CMYK files) nor decodes it (so a file that is
not an image, or above ``MAX_PIXELS``, gets the project's own one-line message, and is deleted too).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from llava_df.apps.demo_flags import MAX_UPLOAD_MB, DemoArguments, parse
from llava_df.apps.face_check import FaceCheck
from llava_df.apps.face_check import face_check as make_face_check
from llava_df.apps.predict import load_detector, predict, read_images
from llava_df.errors import UserError, cli_entry
from llava_df.eval.detector import Detector

logger = logging.getLogger(__name__)


def uploaded_file(upload) -> tuple[str | None, str]:
    """(the path Gradio stored, the name the user's file had) for an upload as a handler receives it:
    Gradio's file payload (a dict with ``path`` and ``orig_name``: preprocessing off) or a path."""
    if not upload:
        return None, ""
    if isinstance(upload, dict):
        path = upload.get("path")
        return path, upload.get("orig_name") or (Path(path).name if path else "")
    return str(upload), Path(upload).name


def _upload_folder() -> Path:
    # lazy: gradio is an optional extra ([demo]); GRADIO_TEMP_DIR, else <tmp>/gradio
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def is_upload(path: str) -> bool:
    """True for a file inside Gradio's upload folder. With preprocessing off the handler is handed a path
    from the request: Gradio refuses paths it did not store, and this second check keeps the handler from
    reading or deleting anything else on the server even if that ever changes."""
    try:
        return Path(path).resolve().is_relative_to(_upload_folder())
    except (OSError, ValueError):
        return False


def _forget(path: str) -> None:
    """Delete an uploaded file and its (Gradio per-upload) folder when that is left empty."""
    if not is_upload(path):
        return
    try:
        os.remove(path)
        os.rmdir(Path(path).parent)
    except OSError:
        pass


def answer(
    detector: Detector, upload, explain: bool, prompt: str, face_check: FaceCheck | None = None
) -> tuple[str, str, str, str, str]:
    """(P(Fake) text, label, threshold text, generated answer, size and face warnings) for one upload (see
    uploaded_file), read, face-checked and scored as predict does it. The uploaded file is deleted."""
    import gradio as gr  # lazy: gradio is an optional extra ([demo]); llava-df demo checks for it first

    path, name = uploaded_file(upload)
    if not path:
        raise gr.Error("Upload a face image first.")
    if not is_upload(path):
        raise gr.Error("Upload the image through this page.")
    try:
        if explain and (prompt or "").count("<image>") != 1:
            raise gr.Error("The question must contain <image> exactly once (where the image goes).")
        images, skipped = read_images([path])
        if skipped:  # the reason names no server path (data.images keeps paths out of it)
            raise gr.Error(
                f"{name} cannot be read as an image: {skipped[0][1]}. Upload a PNG, JPEG or similar."
            )
        try:
            rows, _ = predict(
                detector, images, batch_size=1, generate=explain, prompt=prompt or None, face_check=face_check
            )
        except UserError as err:  # e.g. a non-finite score; its message names the file, by its own name here
            raise gr.Error(str(err).replace(path, name)) from None
    finally:
        _forget(path)  # uploads are not kept after the request, readable or not
    row = rows[0]
    said = f"{row['answer']!r} (parsed: {row['answer_parsed']})" if explain else ""
    threshold = f"{detector.threshold:.6f} ({detector.threshold_source})"
    warnings = "; ".join(w for w in (row["warning"], row.get("face_warning")) if w)
    return f"{row['p_fake']:.6f}", row["label"], threshold, said, warnings


def build_app(detector: Detector, face_check: FaceCheck | None = None):
    import gradio as gr  # lazy: gradio is an optional extra ([demo]); llava-df demo checks for it first

    info = detector.info
    d = detector.data
    with gr.Blocks(title="llava_df deepfake detector", delete_cache=(300, 300)) as app:
        gr.Markdown(
            f"## llava_df deepfake detector\nRun **{info.get('run')}** · projector **{info.get('projector')}** · "
            f"strategy **{info.get('strategy')}** · weights **{info.get('weights')}**"
        )
        with gr.Row():
            with gr.Column():
                # The browser previews the upload; the handler gets the stored file itself (preprocess=False).
                image = gr.Image(type="filepath", sources=["upload"], label="Face image", elem_id="image")
                explain = gr.Checkbox(
                    label="Also generate the model's answer", value=False, elem_id="explain"
                )
                prompt = gr.Textbox(
                    label="Question for the generated answer", value=d.prompt, elem_id="prompt"
                )
                run = gr.Button("Detect", variant="primary", elem_id="detect")
            with gr.Column():
                p_fake = gr.Textbox(label="P(Fake)", elem_id="p_fake", interactive=False)
                label = gr.Textbox(label="Label", elem_id="label", interactive=False)
                threshold = gr.Textbox(label="Threshold", elem_id="threshold", interactive=False)
                said = gr.Textbox(label="Generated answer", elem_id="answer", interactive=False)
                note = gr.Textbox(label="Warning (size, face)", elem_id="note", interactive=False)
        run.click(
            lambda *a: answer(detector, *a, face_check=face_check),
            [image, explain, prompt],
            [p_fake, label, threshold, said, note],
            # Gradio's Image preprocessing would convert the upload with a plain convert("RGB") (not
            # predict's conversion) into a second file, or refuse it with its own message; off, the
            # handler gets the stored upload's payload and reads it with predict's code.
            preprocess=False,
            api_name="detect",
        )
    return app


def serve(app, host: str, port: int, max_upload_mb: float = MAX_UPLOAD_MB, **launch_kwargs):
    """Launch ``app`` (from build_app) on host:port with the upload limit; no share link, no error details."""
    # show_error=False: an unexpected exception's text (server paths, Gradio internals) stays in the
    # server log; the handler's own messages (gr.Error) are shown either way.
    # Gradio builds its own URL from server_name and strips the brackets to bind: IPv6 goes bracketed.
    server_name = f"[{host}]" if ":" in host else host
    return app.launch(
        server_name=server_name, server_port=port, share=False, show_error=False,
        max_file_size=int(max_upload_mb * 1024 * 1024), **launch_kwargs,
    )  # fmt: skip


@cli_entry
def main(argv: list[str]) -> None:
    run(parse(argv))


def run(args: DemoArguments) -> None:
    """Serve the page for ``args`` (parsed and checked by llava_df.apps.demo_flags.parse)."""
    host = args.host
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    detector = load_detector(
        args.run_dir, model_dir=args.model_dir, weights=args.weights, threshold=args.threshold
    )
    faces = make_face_check(args.face_crop, detector.data)
    if faces is not None:
        print(faces.describe(), flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{args.port} (Ctrl+C stops it)", flush=True)
    serve(build_app(detector, faces), host, args.port, args.max_upload_mb)


if __name__ == "__main__":
    main()
