"""User-facing errors: the CLI prints them as one line and exits with their `exit_code`."""


class DiffusionLabError(Exception):
    """An error caused by the user's input (arguments, files, data), reported without a traceback."""

    exit_code = 2


class DataError(DiffusionLabError):
    """A dataset file is missing, truncated, or has the wrong shape or format."""


class CheckpointError(DiffusionLabError):
    """A checkpoint or run directory is missing, corrupt, or incompatible."""


class ConfigError(DiffusionLabError):
    """A configuration value or command-line option is invalid."""


class RunLockedError(ConfigError):
    """Another process is writing to this run directory."""


class DivergedError(DiffusionLabError):
    """Training produced non-finite values and could not recover; the last good checkpoint is kept (exit 3)."""

    exit_code = 3


class TrainingInterrupted(DiffusionLabError):
    """SIGINT or SIGTERM stopped training after a checkpoint of the current step was written (exit 128 + signal)."""

    def __init__(self, message: str, signal_number: int, step: int, checkpoint: object) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number
        self.step = step
        self.checkpoint = checkpoint
