"""memory/measure.py: a real CPU training step counted by the dry run's own categories, beside the dry run."""

from __future__ import annotations

from llava_df.memory.dryrun import dry_run
from llava_df.memory.measure import measure_step
from llava_df.memory.shapes import plan_config
from llava_df.spec.resolve import parse_spec


def test_a_measured_cpu_step_has_the_dry_runs_weights_and_categories(tmp_path):
    spec = parse_spec(["--model_name_or_path", "tiny", "--strategy", "lora", "--bits", "8", "--synthetic_n", "40",
                       "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path)])  # fmt: skip
    measured = measure_step(spec)
    config, _ = plan_config(spec.model)
    planned = dry_run(spec, config, target="cpu", text_tokens=measured.seq_len - config.image_seq_length)
    # the same model: the same weights per component and the same trainable parameters
    assert measured.weights == planned.weights
    assert measured.trainable_params == planned.trainable_params
    parts = (
        measured.grads_bytes,
        measured.optimizer_bytes,
        measured.activations_bytes,
        measured.temporaries_bytes,
    )
    assert measured.peak_bytes == measured.weights_bytes + sum(parts)
    assert measured.activations_bytes > 0 and measured.target == "cpu (measured)"
    # AdamW's two fp32 moments per trainable parameter exist from the first step on
    assert measured.phase_peaks["optimizer"] >= measured.weights_bytes + 2 * measured.trainable_bytes
