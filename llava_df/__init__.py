"""llava_df: a LLaVA-style deepfake detector with interchangeable projectors."""

import logging


class _KernelsHubHint(logging.Filter):
    """Drop bitsandbytes 0.50's "Failed to load CPU gemm_4bit_forward from kernels-community ... `pip install
    kernels`" warning. It is logged when bitsandbytes is imported on a CPU with AVX512-BF16 (by transformers,
    accelerate or PEFT, whatever the run does): its fallback kernel is the one every test checks, and the
    ``kernels`` package it suggests would download code from the Hub at run time, which llava_df never does.
    Set here, before anything imports bitsandbytes; tests/test_fast_verbs.py pins it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_KernelsHubHint())

__version__ = "0.1.0"
