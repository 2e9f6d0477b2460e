"""Does LLM.int8 change what the `smol` preset answers? INT8 against 16/32-bit logits and P(Fake), real weights.

    python benchmarks/smol_int8.py                                  # 200 test images, the fresh projector
    python benchmarks/smol_int8.py --train_projector                # first a projector-only cell (~12 min), then its projector
    python benchmarks/smol_int8.py --n 400 --projector outputs/smol_po/mm_projector.safetensors

The same images (the sweep recipe's synthetic test split, llava_df/configs/sweep_smol.yaml), the same
projector (a stage-1 file, or the seeded fresh one: identical in every variant), no LoRA; the
model built by ``build_model`` as training builds it, in five precisions:

- ``fp32``: --bits 16, fp32: the reference;
- ``bf16``: --bits 16 --bf16 True (bf16 weights outside the projector, CPU autocast);
- ``int8``: --bits 8, fp32 compute, evaluation through training's dequantizing matmul (the CPU default,
  --int8_cpu_eval dequantize: int8 weights, full-precision activations);
- ``int8_bnb``: --bits 8 --int8_cpu_eval bitsandbytes: LLM.int8 itself (activations quantized to int8
  per row, outlier columns above 6.0 kept in 16 bit), what a GPU computes;
- ``int8_bf16``: --bits 8 --bf16 True: the sweep recipe's.

For each: the answer position's full-vocabulary logits against fp32's (largest and mean absolute
difference, top-1 agreement, mean KL(fp32 || variant)), P(Fake) (the recipe's real/fake first tokens,
renormalized) against fp32's (mean and largest |difference|, Spearman), and the base LLM's loss
on the reference sentences below (a text-only check of the weights). Writes results/smol/int8.md
and results/smol/int8.json with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "llava_df" / "configs" / "sweep_smol.yaml"
OUT = ROOT / "results" / "smol"
VARIANTS = {
    "fp32": ["--bits", "16", "--bf16", "False"],
    "bf16": ["--bits", "16", "--bf16", "True"],
    "int8": ["--bits", "8", "--bf16", "False"],
    "int8_bnb": ["--bits", "8", "--bf16", "False", "--int8_cpu_eval", "bitsandbytes"],
    "int8_bf16": ["--bits", "8", "--bf16", "True"],
}
SENTENCES = (
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Rome is the capital of Italy.",
    "A photograph of a face can be edited, swapped or generated; detectors look at the eyes, the skin and the edges.",
    "Water boils at one hundred degrees Celsius at sea level, and it freezes at zero degrees.",
)


def variant_outputs(flags: list[str], n: int, projector: str | None) -> dict:
    import torch

    from llava_df.data.pipeline import prepare_data, split_of
    from llava_df.model.build import build_model
    from llava_df.model.processor import run_processor
    from llava_df.spec.resolve import parse_spec

    argv = ["--config", str(RECIPE), "--strategy", "projector_only", "--output_dir", "/tmp/unused", *flags]
    if projector:
        argv += ["--pretrain_mm_mlp_adapter", projector]
    spec = parse_spec(argv)
    t = spec.training
    processor, _ = run_processor(spec.model, spec.data)
    data = prepare_data(spec.data, processor, seed=t.seed, model_max_length=t.model_max_length)
    dtype = torch.bfloat16 if t.bf16 else None
    torch.manual_seed(0)  # the fresh projector: the same draw in every variant
    model = build_model(spec.model, spec.strategy, torch_dtype=dtype).model.eval()
    test = split_of(data.splits, "test")
    keep = data.collator.extra_keys
    logits, p_fake, is_fake = [], [], []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(t.bf16))
    start = time.process_time()
    with torch.no_grad(), autocast:
        for lo in range(0, min(n, len(test)), 32):
            batch = data.collator([test[i] for i in range(lo, min(lo + 32, n, len(test)))])
            out = model(**{k: v for k, v in batch.items() if k not in keep})
            labels = batch["labels"]
            pos = (labels != -100).int().argmax(1) - 1  # the logit before the first answer token
            rows = torch.arange(len(pos))
            answer = out.logits[rows, pos].float()  # [B, V]
            logits.append(answer)
            two = answer[:, [data.real_id, data.fake_id]]
            p_fake.append(torch.softmax(two, -1)[:, 1])
            is_fake.append(batch["is_fake"])
        seconds = time.process_time() - start
        tok = processor.tokenizer
        text_loss = []
        for sentence in SENTENCES:
            ids = tok(sentence, return_tensors="pt").input_ids
            text_loss.append(float(model(input_ids=ids, labels=ids).loss))
    return {
        "logits": torch.cat(logits),
        "p_fake": torch.cat(p_fake),
        "is_fake": torch.cat(is_fake),
        "text_loss": text_loss,
        "cpu_s_per_image": seconds / len(torch.cat(p_fake)),
    }


def compare(ref: dict, var: dict) -> dict:
    import torch
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    diff = (var["logits"] - ref["logits"]).abs()
    logp, logq = torch.log_softmax(ref["logits"], -1), torch.log_softmax(var["logits"], -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    dp = (var["p_fake"] - ref["p_fake"]).abs()
    y = var["is_fake"].numpy()
    return {
        "logit_max_abs_diff": float(diff.max()),
        "logit_mean_abs_diff": float(diff.mean()),
        "top1_agreement": float((var["logits"].argmax(-1) == ref["logits"].argmax(-1)).float().mean()),
        "kl_mean": float(kl.mean()),
        "p_fake_mean_abs_diff": float(dp.mean()),
        "p_fake_max_abs_diff": float(dp.max()),
        "p_fake_spearman": float(spearmanr(ref["p_fake"].numpy(), var["p_fake"].numpy()).statistic),
        "auc": float(roc_auc_score(y, var["p_fake"].numpy())) if 0 < y.sum() < len(y) else None,
        "text_loss": var["text_loss"],
        "cpu_s_per_image": var["cpu_s_per_image"],
    }


def projector_origin(projector: str | None) -> str:
    """How the projector was made: the run folder's own command and test AUC when it sits in one."""
    if not projector:
        return "the fresh one (seeded), no stage 1"
    results = Path(projector).parent / "results.json"
    if not results.is_file():
        return projector
    r = json.loads(results.read_text())
    argv = " ".join(r["config"]["segments"][-1]["argv"]) if r["config"].get("segments") else "?"
    return f"{projector}, trained by `llava-df train {argv}` (its test AUC {r['test']['auc']:.3f})"


def train_projector(out: Path) -> str:
    """A projector-only cell of the sweep recipe (its command in the report); returns its mm_projector file."""
    cmd = [sys.executable, "-m", "llava_df", "train", "--config", str(RECIPE), "--mm_projector_type", "mlp2x_gelu",
           "--strategy", "projector_only", "--output_dir", str(out), "--disable_tqdm", "True"]  # fmt: skip
    import subprocess

    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return str(out / "mm_projector.safetensors")


def report(rows: dict, n: int, projector: str | None, command: str) -> str:
    from llava_df.provenance import cpu_model, git_state

    git = git_state()
    lines = [
        "# INT8 against 16/32-bit on the `smol` preset (real weights)",
        "",
        f"Command: `{command}`; code: git {git['commit'][:7] if git['commit'] else '?'}{' (dirty)' if git['dirty'] else ''}; "
        f"machine: {cpu_model()}, no GPU.",
        f"{n} test images of the sweep recipe's synthetic benchmark (llava_df/configs/sweep_smol.yaml), projector: "
        f"{projector_origin(projector)}; no LoRA. Reference: fp32. Logits: the answer position, "
        "all 49,153 entries. P(Fake): softmax over the first tokens of 'real' and 'fake'. Text loss: the base LLM's "
        "mean loss on three English sentences (ln 49153 = 10.8 for a random model).",
        "",
        "| variant | max abs logit diff | mean abs logit diff | top-1 agreement | mean KL | mean abs P(Fake) diff | max abs P(Fake) diff | Spearman P(Fake) | AUC | text loss | CPU s/image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        auc = "-" if r["auc"] is None else f"{r['auc']:.3f}"
        lines.append(
            f"| {name} | {r['logit_max_abs_diff']:.3g} | {r['logit_mean_abs_diff']:.3g} | {r['top1_agreement']:.3f} | "
            f"{r['kl_mean']:.2e} | {r['p_fake_mean_abs_diff']:.2e} | {r['p_fake_max_abs_diff']:.2e} | "
            f"{r['p_fake_spearman']:.4f} | {auc} | {sum(r['text_loss']) / len(r['text_loss']):.3f} | {r['cpu_s_per_image']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="test images")
    parser.add_argument(
        "--projector", default=None, help="a stage-1 mm_projector file (default: the fresh one)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--train_projector", action="store_true", help="train a projector-only cell first, use its projector"
    )
    parser.add_argument("--from_json", action="store_true", help="only rewrite int8.md from int8.json")
    args = parser.parse_args()
    if args.from_json:
        payload = json.loads((OUT / "int8.json").read_text())
        (OUT / "int8.md").write_text(
            report(payload["rows"], payload["n"], payload["projector"], payload["command"])
        )
        return
    import torch

    torch.set_num_threads(1)
    command = "python benchmarks/smol_int8.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    if args.train_projector:
        args.projector = train_projector(OUT / "int8_projector_run")
    outputs = {}
    for name in ["fp32", *[v for v in args.variants.split(",") if v != "fp32"]]:
        outputs[name] = variant_outputs(VARIANTS[name], args.n, args.projector)
        print(name, "done", file=sys.stderr, flush=True)
    rows = {name: compare(outputs["fp32"], out) for name, out in outputs.items()}
    n = len(outputs["fp32"]["p_fake"])
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "n": n, "projector": args.projector, "variants": VARIANTS, "rows": rows}
    (OUT / "int8.json").write_text(
        json.dumps(payload, indent=1, default=lambda x: None if math.isnan(x) else x) + "\n"
    )
    (OUT / "int8.md").write_text(report(rows, n, args.projector, command))
    print(f"wrote {OUT / 'int8.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
