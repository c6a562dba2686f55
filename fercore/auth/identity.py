"""Who is at the keyboard: the three modes and the rules of signing in (no Streamlit here; fercore/ui/signin.py
asks these functions and draws the forms).

- personal: no configuration. One user, who may do everything; the server listens on this machine only.
- sso: `[auth]` in secrets (Streamlit's st.login through Authlib, against the school's OIDC provider) and
  `[fer_class] instructors = ["teacher@school.edu", ...]`; everyone else who signs in is a student.
- class code: `[fer_class] class_code = "..."` and `instructor_password = "..."`: a student signs in with the
  code and a display name unique in the class, the instructor with the password.

A sign-in survives a reload through a cookie signed here (itsdangerous, with an age limit); failed attempts
back off, per address, doubling up to a minute.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from itsdangerous import BadSignature, URLSafeTimedSerializer

from fercore.auth.users import PERSONAL, Role, User, validate_name
from fercore.errors import UserError

COOKIE = "fer_signin"
COOKIE_MAX_AGE_S = 14 * 24 * 3600


class Mode(StrEnum):
    PERSONAL = "personal"
    SSO = "sso"
    CLASS_CODE = "class code"


class SignInRefused(UserError):
    """A wrong code or password, a name taken, too many tries; the message says which, in one sentence."""


@dataclass(frozen=True)
class ClassSettings:
    mode: Mode
    class_name: str = ""
    class_code: str = ""
    instructor_password: str = ""
    instructors: tuple[str, ...] = ()      # emails (single sign-on), casefolded
    cookie_secret: str = field(default="", repr=False)


def settings_from(secrets: Mapping) -> ClassSettings:
    """The mode and its settings from .streamlit/secrets.toml (a mapping; empty in personal mode)."""
    fc = dict(secrets.get("fer_class") or {})
    password = str(fc.get("instructor_password") or secrets.get("instructor_password") or "")
    auth = dict(secrets.get("auth") or {})
    name = str(fc.get("class_name") or "")
    if auth and fc.get("instructors"):
        return ClassSettings(Mode.SSO, name, instructors=tuple(str(e).strip().casefold() for e in fc["instructors"]),
                             cookie_secret=str(auth.get("cookie_secret") or ""))
    if fc.get("class_code") or password:
        code = str(fc.get("class_code") or "")
        secret = str(fc.get("cookie_secret") or "") or hashlib.sha256(
            f"fer-lab-cookie\0{password}\0{code}".encode()).hexdigest()   # new code or password: everyone signs in
        return ClassSettings(Mode.CLASS_CODE, name, class_code=code, instructor_password=password,
                             cookie_secret=secret)
    return ClassSettings(Mode.PERSONAL)


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(str(given).encode(), expected.encode())


def student(settings: ClassSettings, code: str, name: str) -> User:
    """The student who typed this class code and display name (the name's uniqueness is the store's to check)."""
    if settings.mode != Mode.CLASS_CODE:
        raise SignInRefused("This lab does not use a class code.")
    if settings.class_code and not _same(code.strip(), settings.class_code):
        raise SignInRefused("That class code is not right; ask your instructor for it.")
    name = validate_name(name, "display name")
    return User(f"student:{name.casefold()}", name, Role.STUDENT)


def instructor(settings: ClassSettings, password: str) -> User:
    if settings.mode != Mode.CLASS_CODE or not _same(password, settings.instructor_password):
        raise SignInRefused("That is not the instructor password.")
    return User("instructor", "Instructor", Role.INSTRUCTOR)


def sso_user(settings: ClassSettings, email: str, name: str | None = None) -> User:
    """A user signed in through the school's provider: an instructor if their email is listed."""
    email = (email or "").strip()
    if not email:
        raise SignInRefused("The sign-in provider gave no email address; ask the instructor to check its setup.")
    role = Role.INSTRUCTOR if email.casefold() in settings.instructors else Role.STUDENT
    return User(email.casefold(), str(name or email), role)


def personal() -> User:
    return PERSONAL


# --- the signed cookie ----------------------------------------------------------------------------------------
def _serializer(settings: ClassSettings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.cookie_secret, salt="fer-lab-signin")


def sign(settings: ClassSettings, user: User) -> str:
    return _serializer(settings).dumps({"id": user.id, "name": user.name, "role": str(user.role)})


def read_cookie(settings: ClassSettings, token: str | None, signed_out_after: float | None = None) -> User | None:
    """The user a cookie names, if its signature holds, it is younger than COOKIE_MAX_AGE_S and it was issued after
    that user last signed out (`signed_out_after`, a Unix time); else None."""
    if not token or settings.mode != Mode.CLASS_CODE:
        return None
    try:
        data, issued = _serializer(settings).loads(token, max_age=COOKIE_MAX_AGE_S, return_timestamp=True)
        user = User(str(data["id"]), str(data["name"]), Role(data["role"]))
    except (BadSignature, KeyError, TypeError, ValueError):
        return None
    if signed_out_after is not None and issued.timestamp() <= signed_out_after:
        return None
    return user


# --- failed attempts back off ---------------------------------------------------------------------------------
class Backoff:
    """Per key (an address): after each failure the next try must wait 1, 2, 4 ... up to 60 seconds."""

    def __init__(self, clock=time.monotonic):
        self._clock, self._lock, self._state = clock, threading.Lock(), {}

    def check(self, key: str) -> None:
        with self._lock:
            fails, until = self._state.get(key, (0, 0.0))
        wait = until - self._clock()
        if wait > 0:
            raise SignInRefused(f"Too many wrong tries; wait {math.ceil(wait)} s and try again.")

    def failed(self, key: str) -> None:
        with self._lock:
            fails, _ = self._state.get(key, (0, 0.0))
            self._state[key] = (fails + 1, self._clock() + min(2.0 ** fails, 60.0))

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)
