"""``llava-df data <what>``: the datasets llava_df generates, written to disk as image folders.

llava-df data synthetic --out data/synth [--n 2000 --seed 0 --difficulty 0.5]   # the benchmark (+ --captions)
llava-df data sbi --real_dir faces/real --out data/sbi                         # self-blended fakes of real faces
llava-df data extract --dataset ffpp --root FaceForensics++ --out data/rgb     # face crops from videos (+ [faces] extra)
"""

from __future__ import annotations

import sys

from llava_df.data import extract, sbi, synthetic
from llava_df.errors import UsageError, cli_entry

KINDS = {"synthetic": synthetic.main, "sbi": sbi.main, "extract": extract.main}


@cli_entry
def main(argv: list[str]):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return None
    kind, rest = argv[0], argv[1:]
    if kind not in KINDS:
        raise UsageError(
            f"llava-df data {kind!r}: expected one of {', '.join(KINDS)}. Run `llava-df data --help`."
        )
    return KINDS[kind](rest)


if __name__ == "__main__":
    main(sys.argv[1:])
