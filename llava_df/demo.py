"""``python -m llava_df.demo``: a local web page that says whether an uploaded face is fake (Gradio).

How to call::

    python -m llava_df.demo --run_dir outputs/run [--weights best] [--port 7860] [--threshold 0.5]
    python -m llava_df.demo --model_dir outputs/run-merged
    # then open http://127.0.0.1:7860

The page shows P(Fake) with the label at the run's threshold (``threshold.json``, or
``--threshold``), the model's generated answer on request, and the run's name, projector and
strategy. The numbers are ``python -m llava_df.predict``'s: the same detector and scoring code.

Privacy: it binds to 127.0.0.1 unless ``--host`` says otherwise, never creates a public share
link, and deletes each uploaded image (Gradio's cached copy) as soon as the request is answered.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from .errors import ArgumentParser, UsageError, cli_entry
from .predict import Detector, load_detector, predict, read_images

logger = logging.getLogger(__name__)


def check_port(host: str, port: int) -> None:
    """UsageError now, before the model loads, when ``port`` cannot be bound."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: expected a TCP port in 1..65535, e.g. 7860.")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise UsageError(
                f"--port {port} on {host} is not free ({err.strerror}): another server uses it. Pass --port with a free "
                f"port (e.g. {port + 1}) or stop the other server."
            ) from None


def _forget(path: str) -> None:
    """Delete an uploaded file and its (Gradio per-upload) folder when that is left empty."""
    try:
        os.remove(path)
        os.rmdir(Path(path).parent)
    except OSError:
        pass


def answer(detector: Detector, path: str | None, explain: bool, prompt: str) -> tuple[str, str, str, str]:
    """(P(Fake) text, label, threshold text, generated answer) for one uploaded image."""
    import gradio as gr

    if not path:
        raise gr.Error("Upload a face image first.")
    try:
        images, skipped = read_images([path])
        if skipped:
            raise gr.Error(f"This file cannot be read as an image ({skipped[0][1]}). Upload a PNG, JPEG or similar.")
        if explain and prompt.count("<image>") != 1:
            raise gr.Error("The question must contain <image> exactly once (where the image goes).")
        rows, _ = predict(detector, images, batch_size=1, generate=explain, prompt=prompt or None)
    finally:
        _forget(path)  # uploads are not kept after the request
    row = rows[0]
    said = f"{row['answer']!r} (parsed: {row['answer_parsed']})" if explain else ""
    return f"{row['p_fake']:.6f}", row["label"], f"{detector.threshold:.6f} ({detector.threshold_source})", said


def build_app(detector: Detector):
    import gradio as gr

    info = detector.info
    d = detector.data_args
    with gr.Blocks(title="llava_df deepfake detector", delete_cache=(300, 300)) as app:
        gr.Markdown(
            f"## llava_df deepfake detector\nRun **{info.get('run')}** · projector **{info.get('projector')}** · "
            f"strategy **{info.get('strategy')}** · weights **{info.get('weights')}**"
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", sources=["upload"], label="Face image", elem_id="image")
                explain = gr.Checkbox(label="Also generate the model's answer", value=False, elem_id="explain")
                prompt = gr.Textbox(label="Question for the generated answer", value=d.prompt, elem_id="prompt")
                run = gr.Button("Detect", variant="primary", elem_id="detect")
            with gr.Column():
                p_fake = gr.Textbox(label="P(Fake)", elem_id="p_fake", interactive=False)
                label = gr.Textbox(label="Label", elem_id="label", interactive=False)
                threshold = gr.Textbox(label="Threshold", elem_id="threshold", interactive=False)
                said = gr.Textbox(label="Generated answer", elem_id="answer", interactive=False)
        run.click(lambda *a: answer(detector, *a), [image, explain, prompt], [p_fake, label, threshold, said])
    return app


@cli_entry
def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="python -m llava_df.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", help="A training run's --output_dir.")
    parser.add_argument("--model_dir", help="A `python -m llava_df.merge` output, instead of --run_dir.")
    parser.add_argument("--weights", default="best", choices=("best", "final"))
    parser.add_argument("--threshold", type=float, default=None, help="Cut on P(Fake) (default: the run's).")
    parser.add_argument("--host", default="127.0.0.1", help="Interface to serve on (default: this machine only).")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    from importlib.util import find_spec

    if find_spec("gradio") is None:
        raise UsageError("the demo page needs Gradio, which is not installed: pip install -e '.[demo]'.")
    check_port(args.host, args.port)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    detector = load_detector(args.run_dir, model_dir=args.model_dir, weights=args.weights, threshold=args.threshold)
    print(f"serving on http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    build_app(detector).launch(server_name=args.host, server_port=args.port, share=False, show_error=True)


if __name__ == "__main__":
    main()
