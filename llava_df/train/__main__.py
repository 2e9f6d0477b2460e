"""``python -m llava_df.train``: what torchrun, accelerate, DeepSpeed and LLaVA's own script lines run.

The flags are checked before torch loads (llava_df.spec.parse), then llava_df.train.workflow trains.
"""

import sys

from llava_df.cli_args import run_verb
from llava_df.errors import cli_entry

main = cli_entry(
    lambda argv: run_verb("llava_df.spec.parse:check_train_argv", "llava_df.train.workflow:run", argv)
)

if __name__ == "__main__":
    main(sys.argv[1:])
