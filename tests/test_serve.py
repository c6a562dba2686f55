"""`python -m fercore serve`: several app processes behind nginx (issue 25). The configuration keeps a browser on
one process and lets websockets and uploads through; the command refuses plainly what it cannot do; and behind a
real nginx a real browser gets its result, a class is spread over the processes, and Ctrl-C leaves nothing running."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fercore import serve
from fercore.cli import main
from fercore.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browserkit import CHROMIUM_ARGS, chromium_or_skip, face_photo, wait_fully_drawn  # noqa: E402


def test_the_configuration_is_sticky_and_passes_websockets_and_uploads(tmp_path):
    conf = serve.nginx_config([9001, 9002, 9003], "0.0.0.0", 8501, tmp_path)
    assert [line.strip() for line in conf.splitlines() if line.strip().startswith("server 127")] == [
        f"server 127.0.0.1:{p} max_fails=0;" for p in (9001, 9002, 9003)]
    assert "hash $ferlab_key consistent;" in conf
    assert f'map $cookie_{serve.ROUTE_COOKIE} $ferlab_key {{ "" $request_id;' in conf, \
        "a new browser gets a random key, a known one keeps its own"
    assert f'Set-Cookie "{serve.ROUTE_COOKIE}=$ferlab_key;' in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf and "proxy_read_timeout 1d;" in conf
    assert "client_max_body_size 200m;" in conf and "listen 0.0.0.0:8501;" in conf
    assert f"pid {tmp_path}/nginx.pid;" in conf and "user " not in conf.split("worker_processes")[0]
    assert "listen [::]:8501;" in serve.nginx_config([9001], "::", 8501, tmp_path)
    assert serve.nginx_config([9001], "localhost", 80, tmp_path, user="nobody nogroup").startswith(
        "# written by `python -m fercore serve` (fercore/serve.py)\nuser nobody nogroup;")


def test_serve_refuses_plainly(monkeypatch, tmp_path, capsys):
    with pytest.raises(UserError, match="at least 1"):
        serve.check(0, 8501)
    with pytest.raises(UserError, match="TCP port"):
        serve.check(2, 70000)
    monkeypatch.setattr(serve, "nginx_path", lambda: None)
    with pytest.raises(UserError, match=r"nginx is not installed \(apt-get install nginx\)"):
        serve.check(2, 8501)
    assert main(["--db", str(tmp_path / "runs.db"), "serve", "--processes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: nginx is not installed") and "Traceback" not in err


@pytest.fixture
def served(tmp_path):
    """`fercore serve --processes 2` on a free port behind a real nginx (skips without nginx)."""
    if serve.nginx_path() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    from load_class import start_serve
    proc, ready = start_serve(tmp_path / "runs.db", 2)
    yield proc, ready
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_a_class_behind_nginx_is_spread_over_the_processes_and_ctrl_c_stops_all(served, tmp_path):
    from load_class import lesson, photos_for
    proc, ready = served
    assert len(ready["pids"]) == 2 and ready["url"].startswith("http://")
    before = [cpu_seconds(p) for p in ready["pids"]]
    result = asyncio.run(lesson([ready["url"]], photos_for(12, tmp_path, 0), spread=2))
    assert result["failed"] == 0, result["failures"]
    used = [cpu_seconds(p) - b for p, b in zip(ready["pids"], before)]
    assert min(used) > 0.3, f"each process served students (CPU seconds {used}); 12 random keys all on one: 1 in 2048"
    proc.send_signal(signal.SIGINT)   # Ctrl-C
    assert proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 10
    while any(alive(p) for p in ready["pids"] + [ready["nginx_pid"]]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in ready["pids"] + [ready["nginx_pid"]]), "nginx and every app process stopped"
    assert not Path(ready["folder"]).exists(), "nginx's own folder is removed"


@pytest.mark.slow
def test_a_browser_behind_nginx_gets_its_result(served, tmp_path):
    sync_playwright, chromium = chromium_or_skip()
    _, ready = served
    photo = face_photo(tmp_path / "face.jpg")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(ready["url"])
        page.get_by_text("What does the model see?").wait_for()
        page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(photo))
        page.get_by_text("Face 1", exact=True).wait_for()   # the upload reached the process that holds the session
        page.get_by_text("Saliency for").first.wait_for()
        wait_fully_drawn(page)
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        text = page.inner_text("body")
        browser.close()
    assert serve.ROUTE_COOKIE in cookies and "Traceback" not in text


def test_serve_is_a_cli_command_with_its_options():
    out = subprocess.run([sys.executable, "-m", "fercore", "serve", "--help"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0 and "--processes" in out.stdout and "nginx" in out.stdout
