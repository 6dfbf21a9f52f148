"""The command line: the run, doctor, bench, fetch-assets and the training command."""
