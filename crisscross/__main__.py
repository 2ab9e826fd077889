"""`python -m crisscross` runs the command-line interface."""

from crisscross.cli import main

main()
