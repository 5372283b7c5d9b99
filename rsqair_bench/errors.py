"""Errors the CLI reports in one line, without a traceback.

Every message names the file, the key or dataset, what was found and what was expected,
so a user can fix the input without reading our code.
"""


class BenchError(Exception):
    """Base class for user-facing errors (bad input, not bugs)."""


class ConfigError(BenchError):
    """A suite or job configuration is invalid."""


class DataError(BenchError):
    """A data file is missing, malformed, or does not match what was asked for."""


class CheckpointError(BenchError):
    """A checkpoint is missing, truncated, or belongs to a different model."""


class RegistryError(BenchError):
    """A relation/model name or plugin cannot be resolved."""


class OutputError(BenchError):
    """An output file or directory cannot be written (permissions, read-only or full filesystem)."""


class LockedError(BenchError):
    """Another process holds the lock of an output directory."""


class TrainingDiverged(BenchError):
    """The loss or a gradient became NaN/inf; the last good checkpoint was kept."""


def found(value: object) -> str:
    """What an input held, for an error message's "found ...": the type and value, or null."""
    return "null" if value is None else f"{type(value).__name__} {value!r}"
