"""``python -m llava_df.compare_projectors``: the users' name for ``llava-df compare`` (llava_df.sweep.compare).

The flags are checked before torch loads (llava_df.sweep.compare_flags), then the sweep runs.
"""

import sys

from llava_df.cli_args import run_verb
from llava_df.errors import cli_entry

main = cli_entry(
    lambda argv: run_verb("llava_df.sweep.compare_flags:parse", "llava_df.sweep.compare:run", argv)
)

if __name__ == "__main__":
    main(sys.argv[1:])
