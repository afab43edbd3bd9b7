"""Every failure the user can cause is an EdgekitError: the CLI prints it as one line, exit code 2."""


class EdgekitError(Exception):
    """Root of edgekit's errors."""

    exit_code = 2


class ConfigError(EdgekitError):
    """A device profile, recipe, board inventory or option is wrong."""


class ModelLoadError(EdgekitError):
    """The model file is missing, unreadable or not a supported model."""


class DataError(EdgekitError):
    """Training / calibration / evaluation data is missing or malformed."""


class CalibrationError(DataError):
    """The representative dataset does not fit the model."""


class OptimizationError(EdgekitError):
    """Pruning, clustering or QAT cannot be applied to this model."""


class ConversionError(EdgekitError):
    """The TFLite converter or the EdgeTPU compiler failed."""


class ResourceLimitError(ConversionError):
    """A step needed more memory or time than its limit: that recipe fails alone, the others are kept."""


class ModelFormatError(EdgekitError):
    """A .tflite file is corrupt, truncated or not a TFLite flatbuffer."""


class CompatibilityError(EdgekitError):
    """A model cannot run on the chosen device or runtime."""


class ConnectError(EdgekitError):
    """A board cannot be reached or refused us (host key, auth, network)."""


class TrustError(ConnectError):
    """Host key unknown or changed, or authentication refused: never retried."""


class RemoteError(EdgekitError):
    """A command on a board failed."""


class ProfileTimeout(RemoteError):
    """A measurement took longer than the per-job timeout."""


class StoreError(EdgekitError):
    """The latency store cannot be opened or written."""
