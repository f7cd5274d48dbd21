"""Miniature dataset trees in the official layouts and encodings, for the tests and the benchmark."""
