"""``python -m llava_df.compare_projectors``: the users' name for ``llava-df compare`` (llava_df.sweep.compare)."""

from llava_df.sweep.compare import main

if __name__ == "__main__":
    main()
