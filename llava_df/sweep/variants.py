"""A study's variants of every cell, by name, read before torch loads: leave one family out's held-out
families and the SBI run (``--lofo``), beside the learning-rate grid's points (llava_df.sweep.lr_grid).

How to call::

    parse_families("all")        # every registered manipulation family, UsageError for an unknown one
    sbi_holdout()                # --holdout_manipulation of the SBI run: every family but self_blend
"""

from __future__ import annotations

from llava_df.data.manipulations import available_manipulations
from llava_df.errors import UsageError

NONE = "none"  # the variant that holds nothing out
SBI = "self_blend_only"  # the variant that trains on reals + self-blended fakes only
SBI_FAMILY = "self_blend"


def sbi_holdout() -> str:
    """--holdout_manipulation of the SBI run: every registered family but self_blend."""
    return ",".join(f for f in available_manipulations() if f != SBI_FAMILY)


def parse_families(text: str) -> list[str]:
    """'all' or comma-separated family names -> names; UsageError naming an unknown one."""
    valid = available_manipulations()
    names = valid if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise UsageError(
            f"--lofo {text!r}: {', '.join(map(repr, bad)) or 'no family'} is not a manipulation family. "
            f"Valid: all, or names of {', '.join(valid)}."
        )
    return list(dict.fromkeys(names))
