"""Issue 22 in Chromium: a class-code classroom with an instructor and two students, each in their own browser
context (their own cookies). Student A queues a run and imports a dataset; student B sees A's run marked as A's
with no control for it, and B's forged requests are refused by fercore; the instructor cancels it; a deleted run
comes back from the trash with its weights; the audit log lists each action. Then the same sign-in through a
local OpenID Connect provider (single sign-on)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from browserkit import CHROMIUM_ARGS, chromium_or_skip, free_port, start_app, stop, wait_fully_drawn

from fercore.auth import Forbidden, Role, User
from fercore.config import RunConfig
from fercore.store import RunStore
from fercore.store.entities import RunStatus

pytestmark = pytest.mark.slow
STEP_MS = 90_000
CODE, PASSWORD = "blue-falcon-42", "owl-teacher-pw"
A = User("student:ana", "Ana", Role.STUDENT)
B = User("student:ben", "Ben", Role.STUDENT)
TINY = RunConfig(data="synthetic:420", conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(16,),
                 batch_size=32, epochs=1, lr=3e-3, tta="none")


def start_class_app(db: Path, port: int, secrets: Path, **env) -> subprocess.Popen:
    """browserkit.start_app with a secrets file of the test's own (Streamlit's `--secrets.files`)."""
    return start_app(db, port, "--secrets.files", str(secrets), **env)


def sign_in_student(page, port: int, name: str, code: str = CODE) -> None:
    page.goto(f"http://127.0.0.1:{port}/")
    wait_fully_drawn(page)
    page.get_by_role("textbox", name="Class code").fill(code)
    page.get_by_role("textbox", name="Your name in this class").fill(name)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text(f"{name} · student").wait_for()


def sign_in_instructor(page, port: int) -> None:
    page.goto(f"http://127.0.0.1:{port}/")
    wait_fully_drawn(page)
    page.get_by_role("tab", name="Instructor").click()
    page.get_by_role("textbox", name="Instructor password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in as the instructor").click()
    page.get_by_text("Instructor · instructor").wait_for()


def test_class_code_classroom_in_chromium(tmp_path):
    sync_playwright, chromium = chromium_or_skip()
    shots = Path(os.environ.get("FER_SCREENSHOTS") or tmp_path)
    db, port, secrets = tmp_path / "runs.db", free_port(), tmp_path / "secrets.toml"
    secrets.write_text(f'[fer_class]\nclass_code = "{CODE}"\ninstructor_password = "{PASSWORD}"\n'
                       'cookie_secret = "test-cookie-secret"\n')
    store = RunStore(str(db))
    server = start_class_app(db, port, secrets)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            ctx = {who: browser.new_context(viewport={"width": 1400, "height": 1000}) for who in ("a", "b", "t")}
            pages = {who: c.new_page() for who, c in ctx.items()}
            for pg in pages.values():
                pg.set_default_timeout(STEP_MS)
            try:
                classroom(pages, port, store, shots)
            except Exception:
                for who, pg in pages.items():
                    pg.screenshot(path=str(shots / f"failed-{who}.png"), full_page=True)
                raise
            browser.close()
    finally:
        stop(server)


def classroom(pages: dict, port: int, store: RunStore, shots: Path) -> None:
    a, b, t = pages["a"], pages["b"], pages["t"]
    # nobody gets in without signing in; a wrong code is refused
    a.goto(f"http://127.0.0.1:{port}/runs")
    wait_fully_drawn(a)
    a.get_by_role("textbox", name="Class code").fill("wrong")
    a.get_by_role("textbox", name="Your name in this class").fill("Ana")
    a.get_by_role("button", name="Sign in", exact=True).click()
    a.get_by_text("That class code is not right").wait_for()
    time.sleep(1.2)   # the back-off after one wrong try
    sign_in_student(a, port, "Ana")
    a.wait_for_function("document.cookie.includes('fer_signin=')")
    a.reload()   # the signed cookie keeps the sign-in
    a.get_by_text("Ana · student").wait_for()
    sign_in_student(b, port, "Ben")
    sign_in_instructor(t, port)

    # A imports a dataset (the synthetic faces) and queues a run from the Train form
    a.goto(f"http://127.0.0.1:{port}/data")
    a.get_by_role("tab", name="Synthetic demo faces").click()
    a.get_by_role("button", name="Create the synthetic set").click()
    a.get_by_text("as 'synthetic'").wait_for()
    a.goto(f"http://127.0.0.1:{port}/train")
    wait_fully_drawn(a)
    a.get_by_role("button", name="Queue this run").click()
    a.get_by_text("Queued run").wait_for()
    [queued] = store.list_runs(owner=A.id)
    assert store.dataset_info("synthetic").owner == A.id

    # B sees A's run marked as A's, with no control for it
    b.goto(f"http://127.0.0.1:{port}/train")
    b.get_by_text("queued by Ana").wait_for()
    wait_fully_drawn(b)
    assert b.get_by_role("button", name="Cancel").count() == 0
    assert b.get_by_role("link", name="Instructor").count() == 0, "students do not see the Instructor page"
    b.screenshot(path=str(shots / "student-b-train.png"), full_page=True)
    # ... and B's forged requests are refused by fercore; B's import of the same name is a new version
    for forged in (lambda: store.request_cancel(queued.id, by=B), lambda: store.delete_run(queued.id, by=B),
                   lambda: store.delete_dataset("synthetic", by=B), lambda: store.empty_trash(by=B)):
        with pytest.raises(Forbidden):
            forged()
    from fercore.data.synthetic import make_synthetic
    v1 = store.dataset_info("synthetic")
    assert store.add_dataset(make_synthetic(70, seed=9), "synthetic", by=B).version == 2
    assert store.dataset_info("synthetic@v1").fingerprint == v1.fingerprint
    assert store.get_run(queued.id).status == RunStatus.QUEUED

    # the instructor can: cancel A's run from the Train page
    t.goto(f"http://127.0.0.1:{port}/train")
    t.get_by_text("queued by Ana").wait_for()
    t.get_by_role("button", name="Cancel").first.click()
    deadline = time.time() + 60
    while store.get_run(queued.id).status != RunStatus.CANCELLED and time.time() < deadline:
        time.sleep(0.5)
    assert store.get_run(queued.id).status == RunStatus.CANCELLED

    # a run of A's with weights, deleted by A, restored by the instructor from the trash with its weights
    from fercore.jobs.execute import execute_run
    trained = execute_run(store, store.create_run(TINY.replace(name="ana-trained"), status=RunStatus.RUNNING,
                                                  by=A).id, device="cpu")
    store.delete_run(trained.id, by=A)
    t.goto(f"http://127.0.0.1:{port}/instructor")
    t.get_by_text("Run to restore").wait_for()
    t.get_by_role("button", name="Restore the run").click()
    t.get_by_text("with its epochs and weights").wait_for()
    back = store.get_run(trained.id)
    assert Path(back.checkpoint).is_file() and back.val is not None and store.epochs(back.id)
    t.screenshot(path=str(shots / "instructor.png"), full_page=True)

    # the audit log lists each action
    log = {(e.user_name, e.action) for e in store.audit_log()}
    for entry in [("Ana", "sign in"), ("Ben", "sign in"), ("Instructor", "sign in"), ("Ana", "import"),
                  ("Ana", "queue"), ("Instructor", "cancel"), ("Ana", "delete"), ("Instructor", "restore"),
                  ("Ben", "import")]:
        assert entry in log, entry


def test_single_sign_on_through_a_local_oidc_provider_in_chromium(tmp_path):
    """Streamlit's st.login() against oidc-provider-mock (a real OpenID Connect provider, run offline here): two
    students and the instructor sign in; the instructor is whoever's email secrets list."""
    sync_playwright, chromium = chromium_or_skip()
    mock = pytest.importorskip("oidc_provider_mock")
    pytest.importorskip("authlib")
    users = [mock.User(sub=s, claims={"email": f"{s}@school.example", "name": s.capitalize()})
             for s in ("ana", "ben", "teacher")]
    db, port, secrets = tmp_path / "runs.db", free_port(), tmp_path / "secrets.toml"
    with mock.run_server_in_thread(user_claims=users) as provider:
        secrets.write_text(
            f'[auth]\nredirect_uri = "http://127.0.0.1:{port}/oauth2callback"\ncookie_secret = "test-secret"\n'
            'client_id = "fer-lab"\nclient_secret = "fer-lab-secret"\n'
            f'server_metadata_url = "http://localhost:{provider.server_port}/.well-known/openid-configuration"\n'
            '[fer_class]\ninstructors = ["teacher@school.example"]\n')
        server = start_class_app(db, port, secrets)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                for sub, role in (("ana", "student"), ("ben", "student"), ("teacher", "instructor")):
                    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                    page.set_default_timeout(STEP_MS)
                    try:
                        page.goto(f"http://127.0.0.1:{port}/")
                        page.get_by_role("button", name="Sign in").click()
                        page.locator("input[name=sub]").fill(sub)   # the provider's own sign-in form
                        page.get_by_role("button", name="Authorize").click()
                        page.get_by_text(f"{sub.capitalize()} · {role}").wait_for()
                        page.reload()   # Streamlit's own identity cookie keeps it
                        page.get_by_text(f"{sub.capitalize()} · {role}").wait_for()
                        wait_fully_drawn(page)
                        assert (page.get_by_role("link", name="Instructor").count() > 0) == (role == "instructor")
                    except Exception:
                        page.screenshot(path=str(tmp_path / f"failed-sso-{sub}.png"), full_page=True)
                        raise
                browser.close()
        finally:
            stop(server)
    signed = {(e.user_id, e.action) for e in RunStore(str(db)).audit_log()}
    assert {("ana@school.example", "sign in"), ("ben@school.example", "sign in"),
            ("teacher@school.example", "sign in")} <= signed
