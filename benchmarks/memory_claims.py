"""The users' memory claims (../shared/seeds) beside the memory planner's figures for the same configs.

Run:  python benchmarks/memory_claims.py        # -> results/memory_claims.{md,json}

Each row is one `python -m llava_df.memory plan` (dry run on meta tensors + closed form, CUDA
target; tensors only: add the CUDA context, ~0.3-0.5 GiB, and the caching allocator's reserve).
Where a claim's config cannot run as written it is said in the row: seeds/000's
``--model_max_length 512`` would cut LLaVA-1.5's 576 image tokens, so 640 is planned; seeds/003's
Qwen3-VL-32B is planned as a Qwen2-architecture 32B LLM (Qwen2.5-32B's config.json shapes) with
LLaVA-1.5's CLIP tower, since llava_df plans LLaVA-style models.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GIB = 2**30
SEVEN_B = ["--model_name_or_path", "llava-hf/llava-1.5-7b-hf", "--bf16", "true", "--model_max_length", "2048",
           "--per_device_train_batch_size", "1"]  # fmt: skip
INT8_LORA = [
    *SEVEN_B,
    "--strategy",
    "lora",
    "--bits",
    "8",
    "--lora_r",
    "32",
    "--lora_alpha",
    "64",
    "--lora_dropout",
    "0.05",
]
QWEN2_32B = {  # Qwen2.5-32B's config.json shapes
    "model_type": "qwen2", "hidden_size": 5120, "intermediate_size": 27648, "num_hidden_layers": 64,
    "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064, "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
}  # fmt: skip


def _llava_with_resolution(folder: Path, size: int) -> str:
    from llava_df.memory.shapes import KNOWN_MODELS

    config = KNOWN_MODELS["llava-hf/llava-1.5-7b-hf"]()
    config.vision_config.image_size = size
    config.image_seq_length = (size // config.vision_config.patch_size) ** 2
    out = folder / f"llava15_7b_{size}px"
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    return str(out)


def rows(work: Path) -> list[dict]:
    qwen = work / "qwen2_32b"
    qwen.mkdir(parents=True, exist_ok=True)
    (qwen / "config.json").write_text(json.dumps(QWEN2_32B))
    out = [
        {"claim": "INT8 + LoRA (seeds/000 table)", "claimed": "16-20 GB", "argv": [*INT8_LORA, "--gradient_checkpointing", "false"],
         "note": "r 32, batch 1, no checkpointing; 576 image tokens + 48 text"},
        {"claim": "INT8 + LoRA, scheme A (seeds/000)", "claimed": "12-16 GB", "argv": [*INT8_LORA, "--gradient_checkpointing", "true"],
         "note": "as above with checkpointing (LLaVA's scripts turn it on)"},
        {"claim": "projector only, INT8 (seeds/000 table)", "claimed": "13-15 GB",
         "argv": [*SEVEN_B, "--strategy", "projector_only", "--bits", "8", "--gradient_checkpointing", "false"], "note": "batch 1"},
        {"claim": "projector only, scheme C (seeds/000)", "claimed": "7-10 GB",
         "argv": [*SEVEN_B, "--strategy", "projector_only", "--bits", "8", "--gradient_checkpointing", "true"], "note": "batch 1, checkpointing"},
        {"claim": "unfreeze first 2 layers + LoRA, scheme B (seeds/000)", "claimed": "13-16 GB",
         "argv": [*SEVEN_B, "--strategy", "unfreeze_early", "--num_unfreeze_early_layers", "2", "--bits", "8", "--lora_r", "32",
                  "--lora_alpha", "64", "--gradient_checkpointing", "true"], "note": "INT8, r 32, batch 1, checkpointing"},
        {"claim": "4-bit 32B QLoRA per card (seeds/003)", "claimed": "~27.5 GB",
         "argv": ["--model_name_or_path", str(qwen), "--bits", "4", "--strategy", "lora", "--lora_r", "8", "--lora_alpha", "16",
                  "--bf16", "true", "--per_device_train_batch_size", "1", "--model_max_length", "1024", "--gradient_checkpointing", "true"],
         "note": "Qwen2.5-32B shapes (qwen2 config.json) + CLIP ViT-L/14-336, r 8, batch 1, checkpointing"},
    ]  # fmt: skip
    for size, claimed in ((448, "100%"), (384, "~70%"), (336, "~56%")):
        out.append({"claim": f"resolution {size} px (seeds/004)", "claimed": claimed, "tier": "resolution",
                    "argv": [INT8_LORA[0], _llava_with_resolution(work, size), *INT8_LORA[2:], "--gradient_checkpointing", "true"],
                    "note": f"{(size // 14) ** 2} image tokens; INT8 + LoRA r 32, checkpointing"})  # fmt: skip
    for seq, claimed in ((2048, "100%"), (1536, "~75%"), (1024, "~50%")):
        out.append({"claim": f"sequence {seq} tokens (seeds/004)", "claimed": claimed, "tier": "sequence", "seq_len": seq,
                    "argv": [*INT8_LORA, "--gradient_checkpointing", "true"], "note": "INT8 + LoRA r 32, checkpointing"})  # fmt: skip
    return out


def main() -> None:
    from llava_df.memory.plan import make_plan

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows(Path(tmp)):
            start = time.time()
            plan = make_plan(row["argv"], target="cuda", seq_len=row.get("seq_len"))
            argv = [a if not a.startswith(tmp) else f"<{Path(a).name}>" for a in row["argv"]]
            row |= {
                "argv": argv,
                "dry_run_gib": plan["dry_run"]["peak_bytes"] / GIB,
                "closed_form_gib": plan["estimate"]["peak_bytes"] / GIB,
                "weights_gib": plan["dry_run"]["weights_bytes"] / GIB,
                "peak_phase": plan["dry_run"]["peak_phase"],
                "seq_len": plan["settings"]["seq_len"],
                "seconds": time.time() - start,
            }
            results.append(row)
            print(
                f"{row['claim']}: claimed {row['claimed']}, planned {row['dry_run_gib']:.2f} GiB", flush=True
            )
    for tier in ("resolution", "sequence"):
        tiered = [r for r in results if r.get("tier") == tier]
        for r in tiered:
            r["relative"] = r["dry_run_gib"] / tiered[0]["dry_run_gib"]
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    out = ROOT / "results"
    (out / "memory_claims.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# The users' memory claims vs the planner",
        "",
        "Command: `python benchmarks/memory_claims.py`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU (the planner needs none); "
        f"git {commit}; {time.strftime('%Y-%m-%d')}  ",
        "Planned: `python -m llava_df.memory plan <flags>` for CUDA, LLaVA-1.5-7B in bf16 unless said; tensor bytes "
        "(what torch.cuda.max_memory_allocated counts), without the CUDA context (~0.3-0.5 GiB) or the allocator's reserve. "
        "The two tier blocks give each tier's peak relative to the first.",
        "",
        "| claim | claimed | planned peak, dry run | closed form | weights | peak in | tokens | planned config | plan s |",
        "|---|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in results:
        rel = f" ({r['relative']:.0%})" if "relative" in r else ""
        lines.append(
            f"| {r['claim']} | {r['claimed']} | {r['dry_run_gib']:.2f} GiB{rel} | {r['closed_form_gib']:.2f} GiB | "
            f"{r['weights_gib']:.2f} GiB | {r['peak_phase']} | {r['seq_len']} | {r['note']} | {r['seconds']:.0f} |"
        )
    lines += ["", "Flags of each row: results/memory_claims.json (`argv`)."]
    (out / "memory_claims.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
