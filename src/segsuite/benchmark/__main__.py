"""`python -m segsuite.benchmark [options]`: see `segsuite.benchmark.cli`."""

from segsuite.benchmark.cli import main

main()
