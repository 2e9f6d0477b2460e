"""Checks of a run's model settings that need the checkpoint's config.json, never its weights.

How to call (the training workflow does, before any weight loads)::

    found = check_model_inputs(spec)   # {"projector_dims", "projector_parameters"}; one error line otherwise
"""

from __future__ import annotations

from llava_df.errors import UsageError
from llava_df.model.build import load_projector_weights, model_config, projector_dims
from llava_df.projectors import create_projector
from llava_df.spec.ranges import check_config_sizes, check_projector_size


def check_model_inputs(spec) -> dict:
    """The checkpoint's sizes, the projector's size at its widths, --kan_reg_weight against the projector,
    and --pretrain_mm_mlp_adapter against the projector; returns what they found."""
    m, t = spec.model, spec.training
    config = model_config(m)
    # Sizes no real model has (0, a million-wide layer) end here in one line, not in a build of gigabytes.
    check_config_sizes(config.to_dict(), f"--model_name_or_path {m.model_name_or_path}")
    dims = projector_dims(config)
    n_params = check_projector_size(spec, dims)
    if t.kan_reg_weight and not hasattr(create_projector(m.mm_projector_type, 8, 8), "regularization_loss"):
        raise UsageError(
            f"--kan_reg_weight {t.kan_reg_weight} needs a KAN projector with regularization_loss(); "
            f"--mm_projector_type {m.mm_projector_type} has none. Use a kan_* projector or --kan_reg_weight 0."
        )
    if m.pretrain_mm_mlp_adapter:  # does the file fit this projector at this model's widths?
        load_projector_weights(create_projector(m.mm_projector_type, *dims), m.pretrain_mm_mlp_adapter)
    return {"projector_dims": list(dims), "projector_parameters": n_params}
