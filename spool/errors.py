"""The one tree of errors spool raises; each carries its CLI exit code (README, Command line)."""

from __future__ import annotations


class SpoolError(Exception):
    """Base of every error spool raises on purpose."""

    exit_code = 2


class InvalidInput(SpoolError):
    """A value given by a caller (id, priority, duration, args, job file) is not acceptable."""


class ConfigError(InvalidInput):
    """spool.toml is unreadable or breaks its schema."""


class UnknownJobType(InvalidInput):
    """A job names a job type that spool.toml does not declare."""


class SpoolMissing(SpoolError):
    """The spool directory does not exist or is not a spool."""


class JobNotFound(SpoolError):
    """No job with this id exists in any state."""

    exit_code = 3


class Conflict(SpoolError):
    """The request clashes with existing state (id taken, unique key held, wrong state)."""

    exit_code = 4


class WaitTimeout(SpoolError, TimeoutError):
    """A wait ran out of time before the job finished."""

    exit_code = 124


class Cancel(Exception):
    """Raised by a handler to end its job as cancelled."""


class ScheduleNotFound(SpoolError):
    """No schedule of this name is declared in spool.toml."""

    exit_code = 3
