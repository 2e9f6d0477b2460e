"""Arguments -> one resolved, frozen RunSpec: parse once, validate once, resolve once.

    parse_flags(argv)   # llava_df.spec.parse: checked flag values, no torch (usage errors, --help)
    parse_spec(argv)    # llava_df.spec.resolve: the frozen RunSpec (llava_df.spec.run_spec)

Nothing is imported here, so that ``llava_df.spec.parse`` stays free of torch.
"""
