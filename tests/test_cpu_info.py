"""llava_df.cpu_info: the CPU's model name and native bf16, read without torch; the note a CPU bf16 run gets where
autocast would emulate bf16 (about 3x slower than fp32 there, results/smol/xeon_2.80GHz/cost.md)."""

import pytest

import llava_df.spec.parse as parse
from llava_df.cpu_info import cpu_model, cpu_native_bf16
from llava_df.spec.parse import parse_flags

CPUINFO = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.80GHz\nflags\t\t: fpu sse avx2 avx512f {extra}\n"


@pytest.mark.parametrize(
    ("extra", "native"), [("", False), ("avx512_bf16", True), ("amx_bf16 amx_tile", True)]
)
def test_native_bf16_is_read_from_the_cpus_flags(tmp_path, extra, native):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra=extra))
    assert cpu_native_bf16(info) is native
    assert cpu_model(info) == "Intel(R) Xeon(R) Processor @ 2.80GHz"


def test_without_proc_cpuinfo_native_bf16_is_unknown(tmp_path):
    assert cpu_native_bf16(tmp_path / "missing") is None


@pytest.mark.parametrize(("native", "noted"), [(False, True), (True, False), (None, False)])
def test_a_cpu_bf16_run_is_told_when_autocast_would_emulate_bf16(monkeypatch, native, noted):
    monkeypatch.setattr(parse, "cpu_native_bf16", lambda: native)
    notes = parse_flags(["--model_name_or_path", "tiny", "--bf16", "True", "--use_cpu", "True"]).notes
    said = [n for n in notes if n.startswith("--bf16 on a CPU without AVX512-BF16 or AMX")]
    assert bool(said) is noted
    if noted:
        assert "--bf16 False runs faster" in said[0] and "results/smol/xeon_2.80GHz/cost.md" in said[0]
    fp32 = parse_flags(["--model_name_or_path", "tiny", "--bf16", "False", "--use_cpu", "True"]).notes
    assert not any(n.startswith("--bf16 on a CPU") for n in fp32)
