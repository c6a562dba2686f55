"""Signing in, for the pages: which user this browser is (fercore.auth.identity decides; this draws the forms).

Pages ask `user()` and never read st.secrets themselves. streamlit_app.py calls `gate()` before any page runs: in
personal mode it returns the personal user at once; in a class it shows the sign-in form until someone signs in.

Class-code sign-ins survive a reload through a cookie: Streamlit reads cookies (`st.context.cookies`) but has no
call to set one, so a one-line script in the page (`st.html(..., unsafe_allow_javascript=True)`) sets it, signed
by fercore.auth.identity (itsdangerous, 14 days, SameSite=Strict, Secure under https). Single sign-on uses
Streamlit's own st.login() cookie.
"""
from __future__ import annotations

import json
import time

import streamlit as st

from fercore import fmt
from fercore.auth import User
from fercore.auth import identity as ident
from fercore.auth.identity import Mode, SignInRefused
from fercore.ui import state

USER_KEY = "_fer_user"
COOKIE_PENDING = "_fer_cookie_pending"   # a sign-in just succeeded: a new token
COOKIE_TOKEN = "_fer_cookie_token"       # the token this session sets
SEEN_AT = "_fer_seen_at"


@st.cache_resource(show_spinner=False)
def _backoff() -> ident.Backoff:
    return ident.Backoff()


def settings() -> ident.ClassSettings:
    return state.class_settings()


def user() -> User:
    """The signed-in user of this session (gate() ran first, in streamlit_app.py); nobody signed in in a class
    stops the page here, so no page ever acts for an unknown visitor."""
    found = session_user()
    if found is None:
        st.stop()
    return found


def session_user() -> User | None:
    """Who this session is, without touching the database: the personal user, the one signed in on this session,
    or the single sign-on user; None in a class before sign-in."""
    s = settings()
    if s.mode == Mode.PERSONAL:
        return ident.personal()
    if s.mode == Mode.SSO:
        info = getattr(st, "user", None)
        if info is not None and info.get("is_logged_in"):
            return ident.sso_user(s, info.get("email") or "", info.get("name"))
        return None
    return st.session_state.get(USER_KEY)


def _cookie_user(s: ident.ClassSettings) -> User | None:
    """The class-code user this browser's signed cookie names, unless they signed out since it was issued."""
    token = st.context.cookies.get(ident.COOKIE) if st.context.cookies else None
    found = ident.read_cookie(s, token)
    if found is not None and ident.read_cookie(s, token, state.get_store().signed_out_at(found.id)) is not None:
        return found
    return None


def gate() -> User:
    """The user of this browser; in a class, the sign-in form (and st.stop) until someone signs in."""
    s = settings()
    found = session_user() or (_cookie_user(s) if s.mode == Mode.CLASS_CODE else None)
    if found is None:
        holder = st.empty()
        with holder.container():
            found = _sign_in_form(s)
        if found is None:
            st.stop()
        holder.empty()
    if st.session_state.get(USER_KEY) != found:
        st.session_state[USER_KEY] = found
        if s.mode != Mode.PERSONAL:
            state.get_store().sign_in(found, str(s.mode))   # (the Instructor page joins the menu on the next run)
    elif s.mode != Mode.PERSONAL and time.time() - st.session_state.get(SEEN_AT, 0.0) > 60:
        state.get_store().seen(found)   # "who is here" on the Instructor page
        st.session_state[SEEN_AT] = time.time()
    if s.mode == Mode.CLASS_CODE and ident.read_cookie(s, st.context.cookies.get(ident.COOKIE)) != found:
        # until this browser brings the cookie back (its next page load), set it on each run: idempotent
        _set_cookie(ident.sign(s, found) if st.session_state.pop(COOKIE_PENDING, None) or
                    not st.session_state.get(COOKIE_TOKEN) else st.session_state[COOKIE_TOKEN])
    return found


def _sign_in_form(s: ident.ClassSettings) -> User | None:
    st.title("FER Lab" + (f": {s.class_name}" if s.class_name else ""))
    if s.mode == Mode.SSO:
        st.write("Sign in with your school account to use the lab.")
        if st.button("Sign in", type="primary", icon=":material/login:"):
            st.login()
        return None
    student_tab, teacher_tab = st.tabs(["Student", "Instructor"])
    with student_tab, st.form("student_signin"):
        code = st.text_input("Class code", type="password" if not s.class_code else "default",
                             disabled=not s.class_code, key="signin_code")
        name = st.text_input("Your name in this class", max_chars=60, key="signin_name",
                             help="Letters, digits, spaces, '.', '-' and '_'; everyone sees it next to your runs.")
        if st.form_submit_button("Sign in", type="primary"):
            return _attempt(lambda: ident.student(s, code or "", name or ""))
    with teacher_tab, st.form("instructor_signin"):
        password = st.text_input("Instructor password", type="password", key="signin_password")
        if st.form_submit_button("Sign in as the instructor"):
            return _attempt(lambda: ident.instructor(s, password or ""))
    return None


def _attempt(make) -> User | None:
    key = st.context.ip_address or "local"
    try:
        _backoff().check(key)
        found = make()
        if not found.is_instructor and state.get_store().name_in_use(found.id):
            raise SignInRefused(f"The name {found.name} is in use in this class; add a letter, or ask the instructor "
                                "to free it.")
    except SignInRefused as e:
        if "Too many" not in str(e):
            _backoff().failed(key)
        st.error(str(e))
        return None
    except Exception as e:   # noqa: BLE001 - a bad name: one sentence
        st.error(str(e))
        return None
    _backoff().succeeded(key)
    st.session_state[COOKIE_PENDING] = True
    return found


def _set_cookie(token: str) -> None:
    st.session_state[COOKIE_TOKEN] = token
    value = json.dumps(f"{ident.COOKIE}={token}; path=/; max-age={ident.COOKIE_MAX_AGE_S}; SameSite=Strict")
    st.html(f"<script>document.cookie = {value} + (location.protocol === 'https:' ? '; Secure' : '');</script>",
            unsafe_allow_javascript=True)


def _clear_cookie() -> None:
    st.html(f"<script>document.cookie = '{ident.COOKIE}=; path=/; max-age=0; SameSite=Strict';</script>",
            unsafe_allow_javascript=True)


def sidebar(u: User) -> None:
    """Who you are, your role, and the way out."""
    s = settings()
    if s.mode == Mode.PERSONAL:
        st.caption("Personal mode: only this computer can open the lab.")
        return
    st.markdown(f":material/person: **{fmt.plain(u.name)}** · {u.role}")
    if st.button("Sign out", key="sign_out", icon=":material/logout:"):
        state.get_store().sign_out(u)
        st.session_state.pop(USER_KEY, None)
        st.session_state.pop(COOKIE_TOKEN, None)
        if s.mode == Mode.SSO:
            st.logout()
        _clear_cookie()
        st.rerun()
