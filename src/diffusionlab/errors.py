"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class DiffusionLabError(Exception):
    """An error caused by the user's input (arguments, files, data), reported without a traceback."""


class DataError(DiffusionLabError):
    """A dataset file is missing, truncated, or has the wrong shape or format."""


class CheckpointError(DiffusionLabError):
    """A checkpoint or run directory is missing, corrupt, or incompatible."""


class ConfigError(DiffusionLabError):
    """A configuration value or command-line option is invalid."""
