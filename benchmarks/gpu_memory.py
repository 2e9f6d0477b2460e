"""One training step of a LLaVA-1.5-7B-shaped model with random weights: peak memory and step time.

Run (a CUDA machine, no network; scripts/gpu_validate.sh does this and appends to results/gpu_memory.csv)::

    python benchmarks/gpu_memory.py --out results/gpu_memory.csv
    python benchmarks/gpu_memory.py --shape tiny --device cpu --out /tmp/smoke.csv   # the code path, on CPU

For each strategy x --bits {16, 8, 4} x checkpointing {off, on} (batch 1, 2048 tokens, LoRA r 32,
8-bit AdamW) a fresh subprocess loads the saved random checkpoint through llava_df's own
build_model / apply_strategy (the training path: bitsandbytes quantization, PEFT, projector),
runs two steps (forward, backward, optimizer step), and reports the allocator's peak
(max_memory_allocated / max_memory_reserved) and the device's used memory (nvidia-smi), beside
the memory planner's prediction for the same cell (``python -m llava_df.memory plan --target cuda``:
dry run and closed form) and the dry run's error against max_memory_allocated (target: 5%). Its own
process keeps every figure separate. The random checkpoint is saved once (bf16 safetensors,
about 14 GB for 7B) in --work_dir and reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {
    # LLaVA-1.5-7B: CLIP ViT-L/14-336 + Vicuna-7B (Llama-2-7B), 576 image tokens
    "llava15_7b": {
        "vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=336, patch_size=14, projection_dim=768),
        "text": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096),
    },
    "tiny": {
        "vision": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                       image_size=64, patch_size=8, projection_dim=128),
        "text": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=4, vocab_size=512, max_position_embeddings=4096),
    },
}  # fmt: skip
STRATEGY_FLAGS = {
    "projector_only": {"tune_mm_mlp_adapter": True},
    "lora": {"lora_enable": True},
    "unfreeze_early": {"lora_enable": True, "num_unfreeze_early_layers": 2},
}
FIELDS = ["shape", "strategy", "bits", "checkpointing", "seq_len", "batch", "lora_r", "optimizer",
          "peak_allocated_mib", "peak_reserved_mib", "device_used_mib", "step_s", "device", "torch",
          "planned_dry_run_mib", "planned_closed_form_mib", "dry_run_error_vs_allocated", "error"]  # fmt: skip


def planned(
    checkpoint: str, strategy: str, bits: int, checkpointing: bool, seq_len: int, lora_r: int
) -> dict:
    """``python -m llava_df.memory plan --target cuda`` for the same cell (meta tensors, no GPU)."""
    from llava_df.memory.plan import make_plan

    flags = {"projector_only": ["--strategy", "projector_only"], "lora": ["--strategy", "lora"],
             "unfreeze_early": ["--strategy", "unfreeze_early", "--num_unfreeze_early_layers", "2"]}[strategy]  # fmt: skip
    argv = [
        "--model_name_or_path", checkpoint, *flags, "--bits", str(bits), "--lora_r", str(lora_r),
        "--lora_alpha", str(2 * lora_r), "--lora_dropout", "0.05", "--bf16", "true", "--optim", "adamw_bnb_8bit",
        "--per_device_train_batch_size", "1", "--model_max_length", str(seq_len),
        "--gradient_checkpointing", str(checkpointing).lower(),
    ]  # fmt: skip
    if checkpointing:
        argv += ["--gradient_checkpointing_kwargs", json.dumps({"use_reentrant": bits == 8})]
    plan = make_plan(argv, target="cuda", seq_len=seq_len)
    return {"planned_dry_run_mib": round(plan["dry_run"]["peak_bytes"] / 2**20),
            "planned_closed_form_mib": round(plan["estimate"]["peak_bytes"] / 2**20)}  # fmt: skip


def save_random_checkpoint(shape: str, folder: Path, device: str) -> Path:
    """A LLaVA of ``shape`` with random weights, saved once (weights drawn on ``device``: fast on a GPU)."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from llava_df.model.tiny import _image_processor, load_tiny_tokenizer

    tok = load_tiny_tokenizer()  # any tokenizer with <image>: the step feeds random ids, not text
    target = folder / f"random-{shape}"
    if (target / "config.json").is_file():
        return target
    s = SHAPES[shape]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**s["vision"]),
        text_config=LlamaConfig(**s["text"], tie_word_embeddings=False),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(s["vision"]["image_size"] // s["vision"]["patch_size"]) ** 2,
    )
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(target)
    del model
    size = s["vision"]["image_size"]
    image_processor = _image_processor()
    image_processor.size, image_processor.crop_size = {"shortest_edge": size}, {"height": size, "width": size}
    LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=s["vision"]["patch_size"],
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    ).save_pretrained(target)  # fmt: skip
    return target


def one_step(
    checkpoint: str, strategy: str, bits: int, checkpointing: bool, seq_len: int, lora_r: int, device: str
) -> dict:
    """Build through llava_df, run one step, measure. Runs in its own process (see main)."""
    import torch

    from llava_df.model.build import build_model
    from llava_df.model.strategies import apply_strategy
    from llava_df.spec.args import ModelArguments
    from llava_df.spec.strategy import resolve_strategy

    args = ModelArguments(model_name_or_path=checkpoint, bits=bits, lora_r=lora_r, lora_alpha=2 * lora_r,
                          lora_dropout=0.05, **STRATEGY_FLAGS[strategy])  # fmt: skip
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = build_model(
        args,
        resolve_strategy(args),
        torch_dtype=torch.bfloat16,
        device_map={"": 0} if device == "cuda" else None,
    ).model
    if bits == 16 and device == "cuda":
        model.to("cuda")
    model = apply_strategy(
        model, args, resolve_strategy(args), gradient_checkpointing=checkpointing, verbose=False
    )
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": bits == 8})
    import bitsandbytes as bnb

    opt = bnb.optim.AdamW8bit([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    config = model.config
    n_image = config.image_seq_length
    image_size = config.vision_config.image_size
    ids = torch.randint(
        100, config.text_config.vocab_size, (1, seq_len)
    )  # never the <image> id (a special token < 100)
    ids[0, 1 : 1 + n_image] = config.image_token_index
    labels = ids.clone()
    labels[0, : 1 + n_image] = -100
    batch = {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
        "pixel_values": torch.randn(1, 3, image_size, image_size, dtype=torch.bfloat16).to(device),
    }
    model.train()
    # Two steps: the second is the steady state (optimizer states exist), as the planner predicts it.
    for _ in range(2):
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        del loss
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        step_s = time.perf_counter() - start
    out = {"step_s": round(step_s, 3), "torch": torch.__version__, "device": device}
    if device == "cuda":
        out |= {
            "peak_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20),
            "peak_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20),
            "device_used_mib": _device_used_mib(),
            "device": torch.cuda.get_device_name(),
        }
    return out


def _device_used_mib() -> int | None:
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        return int(text.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="llava15_7b", choices=sorted(SHAPES))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--out", default="results/gpu_memory.csv", help="CSV to append rows to.")
    parser.add_argument(
        "--work_dir", default=os.environ.get("TMPDIR", "/tmp"), help="Where the random checkpoint goes."
    )
    parser.add_argument("--seq_len", type=int, default=2048)
    parser.add_argument("--lora_r", type=int, default=32)
    parser.add_argument("--strategies", default=",".join(STRATEGY_FLAGS))
    parser.add_argument("--bits", default="16,8,4")
    parser.add_argument("--checkpointing", default="0,1")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one cell, print JSON
    args = parser.parse_args(argv)
    if args.one:
        cell = json.loads(args.one)
        print("RESULT " + json.dumps(one_step(**cell)), flush=True)
        return Path(args.out)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "error: --device cuda but no CUDA device is visible; run on a GPU machine (or --device cpu for a smoke run)."
        )
    checkpoint = save_random_checkpoint(args.shape, Path(args.work_dir), args.device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.is_file()
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for strategy in args.strategies.split(","):
            for bits in map(int, args.bits.split(",")):
                for ckpt in map(int, args.checkpointing.split(",")):
                    cell = dict(checkpoint=str(checkpoint), strategy=strategy, bits=bits, checkpointing=bool(ckpt),
                                seq_len=args.seq_len, lora_r=args.lora_r, device=args.device)  # fmt: skip
                    done = subprocess.run(
                        [sys.executable, __file__, "--one", json.dumps(cell)], capture_output=True, text=True
                    )
                    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                    result = (
                        json.loads(lines[-1][7:])
                        if lines
                        else {"error": done.stderr.strip().splitlines()[-1][:200]}
                    )
                    row = {"shape": args.shape, "strategy": strategy, "bits": bits, "checkpointing": bool(ckpt),
                           "seq_len": args.seq_len, "batch": 1, "lora_r": args.lora_r, "optimizer": "adamw_8bit"} | result  # fmt: skip
                    try:
                        row |= planned(str(checkpoint), strategy, bits, bool(ckpt), args.seq_len, args.lora_r)
                        if row.get("peak_allocated_mib"):
                            row["dry_run_error_vs_allocated"] = round(
                                row["planned_dry_run_mib"] / row["peak_allocated_mib"] - 1, 4
                            )
                    except Exception as err:  # a planner failure is a finding, not a lost measurement
                        row["error"] = f"planner: {type(err).__name__}: {err}"[:200]
                    writer.writerow({k: row.get(k) for k in FIELDS})
                    f.flush()
                    print(json.dumps(row), flush=True)
    return out


if __name__ == "__main__":
    main()
