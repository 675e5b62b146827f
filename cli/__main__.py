"""`python -m spool.cli` runs the CLI."""

from spool.cli import run

run()
