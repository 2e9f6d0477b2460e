"""``llava-df data <what>``: the datasets llava_df generates, written to disk as image folders.

llava-df data synthetic --out data/synth [--n 2000 --seed 0 --difficulty 0.5]   # the benchmark (+ --captions)
llava-df data sbi --real_dir faces/real --out data/sbi                         # self-blended fakes of real faces
llava-df data extract --dataset ffpp --root FaceForensics++ --out data/rgb     # face crops from videos (+ [faces] extra)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from llava_df.data.captions import write_captions
from llava_df.data.cli_flags import parse
from llava_df.data.extract import extract
from llava_df.data.sbi import write_sbi_folder
from llava_df.data.synthetic import SyntheticConfig, write_benchmark
from llava_df.errors import DataError, cli_entry


@cli_entry
def main(argv: list[str]):
    return run(parse(argv))


def run(parsed) -> Path | None:
    """Write what ``parsed`` (from llava_df.data.cli_flags.parse) asks for; the path written."""
    if parsed is None:  # --help
        return None
    kind, args = parsed
    if kind == "extract":
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return extract(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if kind == "sbi":
        meta, summary = write_sbi_folder(
            args.real_dir, args.out, seed=args.seed, difficulty=args.difficulty, per_image=args.per_image
        )
        print(f"{summary.line()}\nwrote {meta}")
        return meta
    if args.captions:
        if args.n < 3:
            raise DataError(
                f"--n {args.n}: stage 1 needs at least 3 captions (train, val, test); e.g. --n 1000."
            )
        path = write_captions(args.out, n=args.n, seed=args.seed, image_size=args.image_size)
        print(f"wrote {args.n} image-caption pairs to {path}")
        return path
    cfg = SyntheticConfig(args.n, args.seed, args.image_size, args.difficulty, args.holdout_manipulation)
    meta = write_benchmark(cfg.validate(), args.out)
    print(f"wrote {cfg.n} images and {meta}")
    return meta


if __name__ == "__main__":
    main(sys.argv[1:])
