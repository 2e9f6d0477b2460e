"""Arguments -> one resolved, frozen RunSpec: parse once, validate once, resolve once.

spec = parse_spec(argv)        # llava_df.spec.parse
spec.strategy, spec.model, ... # llava_df.spec.run_spec.RunSpec
"""

from llava_df.spec.parse import parse_spec
from llava_df.spec.run_spec import RunSpec, SavedRun

__all__ = ["RunSpec", "SavedRun", "parse_spec"]
