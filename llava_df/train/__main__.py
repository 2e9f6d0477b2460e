"""``python -m llava_df.train``: what torchrun, accelerate, DeepSpeed and LLaVA's own script lines run."""

from llava_df.train.workflow import main

if __name__ == "__main__":
    main()
