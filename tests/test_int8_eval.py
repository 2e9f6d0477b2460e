"""CPU evaluation of LLM.int8 layers: training's dequantizing matmul (--int8_cpu_eval dequantize) vs bitsandbytes' own."""

import pytest
import torch
from tiny_training import build

from llava_df.model.quantization import _training_matmul_on_cpu
from llava_df.model.tiny import example_batch
from llava_df.spec.args import ModelArguments


@torch.no_grad()
def run(model, batch, *, train: bool):
    model.train(train)
    return model(**batch).logits


@pytest.fixture(scope="module")
def models():
    fp, processor = build(ModelArguments(bits=16, tune_mm_mlp_adapter=True))
    deq, _ = build(ModelArguments(bits=8, tune_mm_mlp_adapter=True))
    bnb, _ = build(ModelArguments(bits=8, tune_mm_mlp_adapter=True, int8_cpu_eval="bitsandbytes"))
    for m in (deq, bnb):  # the same projector weights as the 16-bit model: only the LLM's matmul differs
        m.model.multi_modal_projector.load_state_dict(fp.model.multi_modal_projector.state_dict())
    return fp, deq, bnb, example_batch(processor, batch_size=4)


def test_dequantized_eval_is_exactly_the_train_mode_function(models):
    _, deq, bnb, batch = models
    assert torch.equal(run(deq, batch, train=False), run(deq, batch, train=True))
    # bitsandbytes' own eval path quantizes the activations: another function
    assert not torch.equal(run(bnb, batch, train=False), run(bnb, batch, train=True))


def test_dequantized_eval_is_closer_to_the_16_bit_model_than_the_int8_product(models):
    fp, deq, bnb, batch = models
    reference = run(fp, batch, train=False)
    err_deq = (run(deq, batch, train=False) - reference).abs().mean().item()
    err_bnb = (run(bnb, batch, train=False) - reference).abs().mean().item()
    assert err_deq < err_bnb
    # and the change is small against the logits themselves (what the threshold sees moves little)
    assert err_bnb - err_deq < 0.05 * reference.abs().mean().item()


def test_only_cpu_inputs_change_the_path():
    layer = torch.nn.Linear(2, 2).eval()
    _training_matmul_on_cpu(layer, (torch.zeros(1, 2, device="meta"),))
    assert layer.training is False  # CUDA (here: any non-CPU device) keeps bitsandbytes' kernels
    _training_matmul_on_cpu(layer, (torch.zeros(1, 2),))
    assert layer.training is True
