"""The model: build a transformers LLaVA, swap the projector, quantize, apply the strategy, save and load.

The base is the tiny preset, a checkpoint, or an LLM + CLIP tower (assemble.py); bitsandbytes
quantizes it (quantization.py); PEFT adds LoRA (strategies.py); checkpoint.py saves what trains.
"""
