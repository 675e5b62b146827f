"""`python -m spool` runs the CLI."""

from spool.cli import run

run()
