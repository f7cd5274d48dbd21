"""Helpers for the tests and the benchmark: miniature dataset trees in the official layouts and encodings
(`dataset_trees`), and runs made to go wrong on purpose (`drills`)."""
