"""Every registered projector preset, and the registry's own behaviour.

The presets come from the registry (``PRESETS``), so a newly registered family is covered here
without naming it. Small widths keep this file fast; ``identity`` is built with in == out.
"""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from llava_df.projectors import PRESETS, available_projectors, create_projector, register_projector
from llava_df.projectors.profile import num_parameters

IN, OUT = 16, 32


def dims(name: str) -> tuple[int, int]:
    return (IN, IN) if name == "identity" else (IN, OUT)


def build(name: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    return create_projector(name, *dims(name), **options)


def features(batch: int = 2, tokens: int = 5, width: int = IN, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, tokens, width, generator=torch.Generator().manual_seed(seed))


def test_presets_include_every_family():
    # One concrete name per registered exact name; patterns contribute their presets.
    assert {"identity", "linear", "mlp2x_gelu", "kan_light"} <= set(PRESETS)
    assert len(PRESETS) == len(set(PRESETS))


# ---- every preset ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", PRESETS)
def test_output_shape(name):
    in_dim, out_dim = dims(name)
    out = build(name)(features(width=in_dim))
    assert out.shape == (2, 5, out_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", PRESETS)
def test_every_parameter_gets_a_gradient(name):
    module = build(name)
    if name == "identity":  # nothing to train
        assert list(module.parameters()) == []
        return
    out = module(features())  # input does not require grad: the vision tower is frozen
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} got an all-zero gradient"


@pytest.mark.parametrize("name", PRESETS)
def test_same_seed_same_module(name):
    x = features()
    assert torch.equal(build(name, seed=3)(x), build(name, seed=3)(x))
    if num_parameters(build(name)) > 0:  # and a different seed gives a different init
        assert not torch.equal(build(name, seed=3)(x), build(name, seed=4)(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", PRESETS)
def test_half_precision_forward_is_close_to_fp32(name, dtype):
    x = features()
    module = build(name).eval()
    with torch.no_grad():
        ref = module(x)
        out = module.to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    # Loose: 8 (bf16) / 11 (fp16) mantissa bits through two layers.
    scale = ref.abs().max().item()
    assert (out.float() - ref).abs().max().item() <= 0.05 * scale + 1e-3, name


@pytest.mark.parametrize("name", PRESETS)
def test_state_dict_round_trip_through_safetensors(name, tmp_path):
    x = features()
    module = build(name, seed=0)
    path = tmp_path / "projector.safetensors"
    save_file(module.state_dict(), path)
    fresh = build(name, seed=1)
    fresh.load_state_dict(load_file(path), strict=True)
    assert torch.equal(fresh(x), module(x))


@pytest.mark.parametrize("name", PRESETS)
def test_wrong_input_width_names_the_widths(name):
    in_dim, _ = dims(name)
    with pytest.raises(ValueError, match=rf"{name}.*\(\.\.\., {in_dim}\).*last dim {in_dim + 1}"):
        build(name)(features(width=in_dim + 1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", PRESETS)
def test_non_finite_input_raises(name, bad):
    x = features(width=dims(name)[0])
    x[1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"1 non-finite"):
        build(name)(x)


# ---- registry behaviour ----------------------------------------------------------------------
def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError) as info:
        create_projector("mlp2x_relu", IN, OUT)
    message = str(info.value)
    assert "mlp2x_relu" in message
    for name in available_projectors():
        assert name in message


def test_registering_a_name_twice_raises_and_keeps_the_first():
    before = (available_projectors(), list(PRESETS))
    with pytest.raises(ValueError, match="already registered"):
        register_projector("linear", "torch.nn:Identity")
    with pytest.raises(ValueError, match="already registered"):
        register_projector("mlp{depth}x_gelu", "torch.nn:Identity")
    assert (available_projectors(), list(PRESETS)) == before
    assert isinstance(create_projector("linear", IN, OUT), torch.nn.Linear)


@pytest.mark.parametrize("name", ["mlp0x_gelu", "mlp-1x_gelu", "mlpx_gelu", "kan_light_g0", "mlp2x_gelu_"])
def test_pattern_with_invalid_values_raises(name):
    with pytest.raises(KeyError, match="integers >= 1"):
        create_projector(name, IN, OUT)


def test_options_conflicting_with_the_name_raise():
    with pytest.raises(ValueError, match=r"\['depth'\].*mlp2x_gelu"):
        create_projector("mlp2x_gelu", IN, OUT, depth=3)
    with pytest.raises(ValueError, match=r"\['groups'\].*kan_light_g8"):
        create_projector("kan_light_g8", IN, OUT, groups=4)


@pytest.mark.parametrize("bad", [0, -4, 4.0, "16"])
def test_bad_widths_raise(bad):
    with pytest.raises(ValueError, match=r"in_dim must be a positive int"):
        create_projector("linear", bad, OUT)


def test_mlp2x_gelu_parameter_count_at_llava_widths():
    # LLaVA-1.5-7B: CLIP ViT-L/14 (1024) -> Vicuna-7B (4096).
    assert num_parameters(create_projector("mlp2x_gelu", 1024, 4096)) == 20_979_712


def test_mlp_depth_pattern_builds_that_many_linears():
    module = create_projector("mlp3x_gelu", IN, OUT)
    assert [type(m).__name__ for m in module] == ["Linear", "GELU", "Linear", "GELU", "Linear"]


# ---- released LLaVA projector layouts --------------------------------------------------------
def test_llava_mm_projector_keys_load_strict_into_mlp2x_gelu():
    g = torch.Generator().manual_seed(0)
    state = {
        "0.weight": torch.randn(OUT, IN, generator=g),
        "0.bias": torch.randn(OUT, generator=g),
        "2.weight": torch.randn(OUT, OUT, generator=g),
        "2.bias": torch.randn(OUT, generator=g),
    }
    module = create_projector("mlp2x_gelu", IN, OUT)
    module.load_state_dict(state, strict=True)
    x = features()
    expected = F.linear(
        F.gelu(F.linear(x, state["0.weight"], state["0.bias"])), state["2.weight"], state["2.bias"]
    )
    torch.testing.assert_close(module(x), expected)


def test_hf_llava_projector_keys_load_and_match_hf_output():
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=IN, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        ),
        text_config=LlamaConfig(
            hidden_size=OUT, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
        ),
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    hf = LlavaMultiModalProjector(config).eval()
    assert {"linear_1.weight", "linear_2.weight"} <= set(hf.state_dict())
    ours = create_projector("mlp2x_gelu", IN, OUT)
    ours.load_state_dict(hf.state_dict(), strict=True)
    x = features()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x))


@pytest.mark.parametrize("name", [*PRESETS, "mlp3x_gelu", "kan_h32_g7_k1", "kan_light_g4"])
def test_parameter_formula_matches_the_built_module(name):
    from llava_df.projectors import count_parameters

    in_dim, out_dim = (64, 64) if name == "identity" else (48, 80)
    built = create_projector(name, in_dim, out_dim)
    assert count_parameters(name, in_dim, out_dim) == sum(p.numel() for p in built.parameters())


def test_the_notes_efficient_kan_is_a_bottleneck_mlp_with_a_name_that_says_so():
    # seeds/004's "Efficient KAN": Linear(in, 64) -> activation -> Linear(64, out), "262K, 1.5% of the MLP".
    from llava_df.projectors import count_parameters
    from llava_df.projectors.rational import GroupRational

    silu = create_projector("bottleneck_h64_silu", 1024, 4096)
    assert [type(m).__name__ for m in silu] == ["Linear", "SiLU", "Linear"]
    assert (silu[0].out_features, silu[2].in_features) == (64, 64)
    n = count_parameters("bottleneck_h64_silu", 1024, 4096)
    assert n == sum(p.numel() for p in silu.parameters()) == 1025 * 64 + 65 * 4096 == 331_840
    assert round(n / count_parameters("mlp2x_gelu", 1024, 4096), 4) == 0.0158  # not 262K: measured, 1.58%
    rational = create_projector("bottleneck_h64_rational", 1024, 4096)
    assert isinstance(rational[1], GroupRational) and rational[1].numerator.shape[0] == 8
    assert count_parameters("bottleneck_h64_rational", 1024, 4096) == 331_840 + 8 * (6 + 4)
    x = torch.randn(2, 3, 1024)
    assert rational(x).shape == silu(x).shape == (2, 3, 4096)
