"""`python -m crisscross` runs the command-line interface."""

from crisscross.platform.cli import main

main()
