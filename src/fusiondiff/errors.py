"""The project's own errors: problems a user can fix, each message saying what was wrong, where, and how to
fix it. The CLI's error boundary (:mod:`fusiondiff.cli.main`) prints them as one line and exits with code 2;
``HYDRA_FULL_ERROR=1`` shows the traceback. Anything else keeps its traceback (a bug, not a user error).

Each class also derives from the builtin a caller would expect (ValueError, FileNotFoundError)."""

from __future__ import annotations


class FusiondiffError(Exception):
    """Base class of the user-fixable errors."""


class InputError(FusiondiffError, ValueError):
    """An input (image, mask, folder, scene) that cannot be used."""


class MissingInputError(InputError, FileNotFoundError):
    """An input file or folder that does not exist."""


class ConfigError(FusiondiffError, ValueError):
    """A setting out of range, an unknown name, or keys that do not go together."""


class ModelFileError(FusiondiffError, ValueError):
    """A model file that is not a fusiondiff bundle or checkpoint, or a model of another task."""


class MissingModelFileError(ModelFileError, FileNotFoundError):
    """A model file that does not exist."""


class OutputError(FusiondiffError, ValueError):
    """An output that cannot or must not be written (e.g. it would overwrite a source)."""
