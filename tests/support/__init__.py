"""Test-side helpers, importable as `support` (pytest puts `tests/` on the path: `pythonpath` in
pyproject.toml): miniature dataset trees in the official layouts and encodings (`dataset_trees`), and
runs made to go wrong on purpose (`drills`). Nothing under `src/` imports them; the benchmark's data
section, a developer tool, loads `dataset_trees` from the checkout it runs in."""
