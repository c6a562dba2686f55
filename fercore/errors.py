"""Everything a user can cause, and the one function that turns any error into a sentence.

A `UserError`'s message is a plain sentence meant for the person who caused it: the CLI prints it
(as {"error": ...} with --json), the pages show it with st.error, the runner stores it as a run's
failure reason. Anything that is not a UserError is a bug: `user_message` gives a short note and the
caller logs the traceback where a developer will find it (the run's log, the server log).

The subclasses also derive from the built-in type they refine (ValueError, LookupError) so that
generic code that catches those keeps working.
"""
from __future__ import annotations

import errno


class UserError(Exception):
    """A problem the user can fix; the message is a plain sentence."""


class ConfigError(UserError, ValueError):
    """A run config that cannot be trained."""


class DataError(UserError, ValueError):
    """A dataset that cannot be read or used as asked."""


class NotFound(UserError, LookupError):
    """No run or dataset by that id or name."""


class RunFileError(UserError, ValueError):
    """A run or checkpoint file that cannot be used."""


class ImageError(UserError, ValueError):
    """An upload that is not an image we can read."""


class ExplainError(UserError, ValueError):
    """An attribution that cannot be computed for this model or method."""


class WeightsUnavailable(UserError, RuntimeError):
    """Pretrained ImageNet weights that are not on this machine."""


class SweepError(UserError, ValueError):
    """A hyperparameter search that cannot be set up."""


class UsageError(UserError):
    """A mistyped command line (an unknown flag, a bad choice)."""


class PathRefused(UserError, ValueError):
    """A path the app may not read from."""


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite; the message says when and suggests why."""


def is_user_error(e: BaseException) -> bool:
    """True for errors whose message is meant for the user as it stands."""
    return isinstance(e, (UserError, FileNotFoundError, PermissionError))


def user_message(e: BaseException) -> str:
    """One sentence for any error: a UserError's own message; known system failures in words; else a short
    note naming the unexpected error (its traceback belongs in a log, which the caller writes)."""
    if is_user_error(e):
        return str(e)
    if type(e).__name__ == "OutOfMemoryError":   # torch's, without importing torch here
        return "The GPU ran out of memory; try a smaller batch size or image size."
    if isinstance(e, MemoryError):
        return "The machine ran out of memory; try a smaller batch size, image size or dataset."
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "The disk is full; free some space and try again."
    if isinstance(e, OSError):
        return f"A file operation failed ({e})."
    return f"Unexpected error ({type(e).__name__}: {e})."
