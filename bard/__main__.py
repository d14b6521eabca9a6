"""`python -m bard` (and `torchrun -m bard train ...`) run the CLI."""

from bard.cli import main

main()
