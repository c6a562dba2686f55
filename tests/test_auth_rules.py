"""Issue 22: the rules of who may do what (fercore.auth), pure and in one table."""
from __future__ import annotations

import pytest

from fercore.auth import (
    CLI,
    PERSONAL,
    Action,
    Forbidden,
    Limits,
    Role,
    User,
    check_queue,
    check_sweep,
    may,
    require,
    validate_name,
)
from fercore.config import RunConfig
from fercore.errors import UserError

ANA = User("student:ana", "Ana", Role.STUDENT)
BEN = User("student:ben", "Ben", Role.STUDENT)
TEACH = User("instructor", "Instructor", Role.INSTRUCTOR)


def test_a_student_may_act_on_their_own_runs_only_and_the_instructor_on_all():
    for action in (Action.CANCEL, Action.RESUME, Action.DELETE):
        assert may(ANA, action, ANA.id)
        assert not may(BEN, action, ANA.id)
        assert not may(ANA, action, None)   # a row older than owners is the instructor's
        assert may(TEACH, action, ANA.id)
    with pytest.raises(Forbidden, match="Ben may not cancel run a"):
        require(BEN, Action.CANCEL, ANA.id, what="run a")


def test_instructor_only_actions_are_refused_to_students_in_a_sentence():
    for action in (Action.RESTORE, Action.EMPTY_TRASH, Action.DELETE_DATASET, Action.IMPORT_WEIGHTS,
                   Action.SET_LIMITS, Action.SET_STARTER, Action.SEE_CLASS):
        assert not may(ANA, action)
        for user in (TEACH, PERSONAL, CLI):
            assert may(user, action)
        with pytest.raises(Forbidden, match="^Only the instructor may"):
            require(ANA, action)
    for action in (Action.QUEUE, Action.IMPORT_DATASET, Action.IMPORT_RUN):
        assert may(ANA, action)


def test_limits_refuse_what_is_over_them_for_students_only():
    limits = Limits(active_runs=2, epochs=30, image_size=64, batch_size=256, sweep_trials=4)
    ok = RunConfig(data="synthetic", epochs=20)
    check_queue(ANA, limits, ok, active=1)
    with pytest.raises(Forbidden, match="class limit is 2"):
        check_queue(ANA, limits, ok, active=2)
    with pytest.raises(Forbidden, match="Epochs 1000 is over the class limit of 30"):
        check_queue(ANA, limits, ok.replace(epochs=1000), active=0)
    with pytest.raises(Forbidden, match="Batch size 4096"):
        check_queue(ANA, limits, ok.replace(batch_size=4096), active=0)
    check_queue(TEACH, limits, ok.replace(epochs=1000, batch_size=4096), active=50)
    with pytest.raises(Forbidden, match="200 trials"):
        check_sweep(ANA, limits, 200)
    check_sweep(TEACH, limits, 200)


def test_limits_round_trip_and_refuse_nonsense():
    limits = Limits(epochs=10)
    assert Limits.from_dict(limits.to_dict()) == limits
    assert Limits.from_dict({"epochs": "12", "unknown": 3}).epochs == 12
    with pytest.raises(ValueError, match="above 0"):
        Limits.from_dict({"active_runs": 0})


@pytest.mark.parametrize("bad", ["", " ", "x" * 101, "[click](http://evil)", "![img](http://t/p.png)", "../etc",
                                 "a/b", "<b>hi</b>", "-rf", "fer@v1", "a:red[b]"])
def test_names_are_validated(bad):
    with pytest.raises(UserError):
        validate_name(bad)


def test_good_names_pass_stripped():
    assert validate_name("  fer2013-dedup v2_a.b ") == "fer2013-dedup v2_a.b"


# --- identity: the modes, signing in, the cookie, the back-off ------------------------------------------------------
def test_the_mode_comes_from_the_secrets():
    from fercore.auth import identity
    assert identity.settings_from({}).mode == identity.Mode.PERSONAL
    code = identity.settings_from({"fer_class": {"class_code": "c", "instructor_password": "p"}})
    assert code.mode == identity.Mode.CLASS_CODE and code.cookie_secret
    assert identity.settings_from({"instructor_password": "p"}).mode == identity.Mode.CLASS_CODE   # the older key
    sso = identity.settings_from({"auth": {"client_id": "x"}, "fer_class": {"instructors": ["T@School.example"]}})
    assert sso.mode == identity.Mode.SSO
    assert identity.sso_user(sso, "t@school.example").is_instructor
    assert not identity.sso_user(sso, "ana@school.example").is_instructor


def test_class_code_sign_in_and_the_signed_cookie():
    from fercore.auth import identity
    s = identity.settings_from({"fer_class": {"class_code": "blue", "instructor_password": "owl"}})
    ana = identity.student(s, "blue", " Ana ")
    assert ana == User("student:ana", "Ana", Role.STUDENT)
    with pytest.raises(identity.SignInRefused, match="class code"):
        identity.student(s, "red", "Ana")
    with pytest.raises(UserError):
        identity.student(s, "blue", "[x](http://e)")
    with pytest.raises(identity.SignInRefused, match="instructor password"):
        identity.instructor(s, "cat")
    assert identity.instructor(s, "owl").is_instructor
    token = identity.sign(s, ana)
    assert identity.read_cookie(s, token) == ana
    assert identity.read_cookie(s, token[:-2] + "xx") is None, "a tampered cookie"
    forged = identity.sign(identity.settings_from({"fer_class": {"class_code": "other"}}), TEACH)
    assert identity.read_cookie(s, forged) is None, "signed with another secret"
    import time as clock
    assert identity.read_cookie(s, token, signed_out_after=clock.time() + 5) is None, "signed out since"


def test_failed_sign_ins_back_off():
    from fercore.auth import identity
    now = [100.0]
    backoff = identity.Backoff(clock=lambda: now[0])
    backoff.check("1.2.3.4")
    for wait in (1, 2, 4, 8):
        backoff.failed("1.2.3.4")
        with pytest.raises(identity.SignInRefused, match=f"wait {wait} s"):
            backoff.check("1.2.3.4")
        now[0] += wait
        backoff.check("1.2.3.4")
    backoff.check("5.6.7.8")   # others are not held up
    backoff.succeeded("1.2.3.4")
    backoff.failed("1.2.3.4")
    with pytest.raises(identity.SignInRefused, match="wait 1 s"):
        backoff.check("1.2.3.4")
