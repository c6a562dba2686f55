"""Users and roles. A user is a frozen (id, name, role): the id is what rows record as their owner."""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from fercore.errors import UserError


class Role(StrEnum):
    INSTRUCTOR = "instructor"
    STUDENT = "student"


@dataclass(frozen=True)
class User:
    id: str        # stable: an email (single sign-on), `student:<name>` (class code), `instructor`, `local`, `cli`
    name: str      # what the pages show
    role: Role

    @property
    def is_instructor(self) -> bool:
        return self.role == Role.INSTRUCTOR

    @property
    def label(self) -> str:
        return f"{self.name} ({self.role})"


# Personal mode (no configuration): the one person at this laptop may do everything.
PERSONAL = User("local", "you", Role.INSTRUCTOR)
# The command line runs on the server with the database's file rights: it acts as the instructor.
CLI = User("cli", "command line", Role.INSTRUCTOR)
# The lab's own doings: registering the shipped starter, a worker queueing a sweep's next trial.
SYSTEM = User("system", "FER Lab", Role.INSTRUCTOR)
# Rows made before owners existed belong to the instructor.
LEGACY_OWNER = "instructor"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:\-]*$")
MAX_NAME = 100


def validate_name(name: str, what: str = "name") -> str:
    """A run, dataset or display name: 1-100 letters, digits, spaces, '.', ':', '-' and '_', starting with a letter
    or digit (no Markdown links or images, no HTML, no path separators). Returns it stripped, or raises a
    sentence."""
    name = (name or "").strip()
    if not name:
        raise UserError(f"The {what} is empty; type one.")
    if len(name) > MAX_NAME:
        raise UserError(f"The {what} is {len(name)} characters long; use at most {MAX_NAME}.")
    if not NAME_RE.match(name):
        raise UserError(f"The {what} {name[:MAX_NAME]!r} may only use letters, digits, spaces, '.', ':', '-' and "
                        "'_', and must start with a letter or digit.")
    return name


def safe_name(text: str, fallback: str = "dataset") -> str:
    """A valid name made from one nobody typed (a file's or a zip folder's name): other characters become '-'."""
    name = re.sub(r"[^A-Za-z0-9 ._:\-]", "-", str(text or "")).strip()
    name = re.sub(r"^[^A-Za-z0-9]+", "", name)[:MAX_NAME].strip()
    return name or fallback
