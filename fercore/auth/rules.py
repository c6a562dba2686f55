"""Who may do what: the one table every caller asks (the store and jobs before they act, the pages before they
draw a control). The instructor may do everything; a student may queue, import datasets and run files, and
cancel, resume or delete their own runs."""
from __future__ import annotations

from enum import StrEnum

from fercore.auth.users import LEGACY_OWNER, User
from fercore.errors import UserError


class Forbidden(UserError, PermissionError):
    """Someone asked for what their role does not allow; the message says what and why, in one sentence."""


class Action(StrEnum):
    QUEUE = "queue"                        # a run, a lesson, a sweep
    CANCEL = "cancel"
    RESUME = "resume"
    DELETE = "delete"                      # a run, to the trash
    RESTORE = "restore"                    # from the trash
    EMPTY_TRASH = "empty the trash"
    IMPORT_DATASET = "import a dataset"    # always a new version: nothing is replaced
    DELETE_DATASET = "delete a dataset"
    IMPORT_RUN = "import a run file"
    IMPORT_WEIGHTS = "import pretrained weights"
    SET_LIMITS = "change the class limits"
    SET_STARTER = "choose the starter model"
    SEE_CLASS = "see the instructor page"


STUDENT_MAY = {Action.QUEUE, Action.IMPORT_DATASET, Action.IMPORT_RUN}
OWN_ONLY = {Action.CANCEL, Action.RESUME, Action.DELETE}   # a student may, on what they own


def may(user: User, action: Action, owner: str | None = None) -> bool:
    """Whether `user` may do `action` to something owned by `owner` (None: nobody in particular)."""
    if user.is_instructor:
        return True
    if action in STUDENT_MAY:
        return True
    return action in OWN_ONLY and (owner or LEGACY_OWNER) == user.id


def require(user: User, action: Action, owner: str | None = None, what: str = "") -> None:
    """Raise Forbidden, with one sentence, unless `may(user, action, owner)`."""
    if may(user, action, owner):
        return
    if action in OWN_ONLY:
        raise Forbidden(f"{user.name} may not {action} {what or 'this'}: it belongs to someone else, and students may "
                        f"only {action} their own runs.")
    raise Forbidden(f"Only the instructor may {action}" + (f" ({what})." if what else "."))
