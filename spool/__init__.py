"""spool: a filesystem-spooled job system for single hosts and NFS clusters.

Public API: `Spool`, `Job`, the error tree, and `Cancel` for handlers.
"""

from spool.api import Spool
from spool.errors import (Cancel, Conflict, ConfigError, InvalidInput, JobNotFound, SpoolError,
                          SpoolMissing, UnknownJobType, WaitTimeout)
from spool.job import Job

__all__ = ["Cancel", "ConfigError", "Conflict", "InvalidInput", "Job", "JobNotFound", "Spool",
           "SpoolError", "SpoolMissing", "UnknownJobType", "WaitTimeout"]
__version__ = "0.1.0"
