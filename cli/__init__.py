"""The `spool` command: one group that builds a `Spool` for its subcommands.

Errors: a SpoolError becomes one `Error: ...` line and the exit code of README, Command line; a
filesystem fault (OSError: a full disk, EACCES, EROFS, EIO...) one `Error: PATH: problem` line
and exit 1 (the thing asked for failed, not the input); any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

import sys

import click

from spool.api import Spool
from spool.cli.common import (READ_ONLY_COMMANDS, describe_fault, is_fault, option_envvars,
                              warn)
from spool.errors import SpoolError

FAULT_EXIT = 1  # a filesystem fault: the thing asked for failed (README, Command line)


class SpoolFailure(click.ClickException):
    """A SpoolError or a filesystem fault shown as `Error: ...` with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @classmethod
    def of(cls, error: SpoolError) -> SpoolFailure:
        return cls(str(error), error.exit_code)


class SpoolGroup(click.Group):
    """Turns SpoolError and filesystem faults raised by any command into their exit codes;
    gives every command option its `SPOOL_<OPTION>` variable (README, Command line)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            option_envvars(command)
        return command

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SpoolError as error:
            raise SpoolFailure.of(error) from None
        except OSError as error:
            if not is_fault(error):
                raise
            where = ctx.obj.path if isinstance(ctx.obj, Spool) else None
            raise SpoolFailure(describe_fault(error, where), FAULT_EXIT) from None


@click.group(cls=SpoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--spool", "spool_dir", envvar="SPOOL_DIR", default="spool", show_default=True,
              type=click.Path(file_okay=False), help="Spool directory [env: SPOOL_DIR].")
@click.option("--host", envvar="SPOOL_HOST", default=None,
              help="This host's name [env: SPOOL_HOST; default: short hostname].")
@click.version_option(package_name="spool", message="spool %(version)s")
@click.pass_context
def main(ctx: click.Context, spool_dir: str, host: str | None) -> None:
    """spool: jobs as JSON files, state as directories, every change one rename.

    \b
    Quick start:
      spool init                       create ./spool with a sample spool.toml
      spool submit echo -a message=hi  enqueue a job (prints its id)
      spool worker                     run jobs
      spool status                     see counts, hosts and schedules
    """
    try:
        read_only = ctx.invoked_subcommand in READ_ONLY_COMMANDS
        ctx.obj = Spool(spool_dir, host=host, read_only=read_only, warn=warn)
    except SpoolError as error:
        raise SpoolFailure.of(error) from None


def run() -> None:
    """Console entry point."""
    sys.exit(main())


from spool.cli import admin, daemons, flow, fsck, inspect, jobs  # noqa: E402,F401  (each module adds its commands)
