"""A bigger class server: several app processes behind one nginx (issue 25), `python -m fercore serve`.

One Streamlit process runs every session's script in threads of one Python interpreter, so it uses about one core
for page work, however many the machine has. `serve` starts `--processes` app processes on private ports of
127.0.0.1, over the same database, each with cores / processes torch threads, and runs nginx in front of them on
the address and port the class opens. nginx keeps each browser on one process (a session's websocket and its
uploads must reach the process that holds it): its first response gives the browser a cookie with a random key,
and the key's consistent hash names the process from then on.

nginx is the one outside program this needs (`apt-get install nginx`); it runs unprivileged, with its
configuration, pid file, logs and temporary files in a folder of its own. Ctrl-C (or SIGTERM) stops nginx and every
app process.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fercore.errors import UserError

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "streamlit_app.py"
ROUTE_COOKIE = "ferlab_process"
NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def nginx_path() -> str | None:
    return shutil.which("nginx") or next((p for p in NGINX_PATHS if Path(p).exists()), None)


def nginx_config(backends: list[int], address: str, port: int, folder: Path, max_upload_mb: int = 200,
                 user: str | None = None) -> str:
    """nginx's whole configuration: sticky by a random per-browser key, websockets upgraded and kept open, uploads up
    to `max_upload_mb` (Streamlit's own limit) streamed through, every file nginx writes inside `folder`; `user`:
    the workers' "user group" when nginx starts as root (it then drops to them)."""
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;" for p in backends)
    listen = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return f"""# written by `python -m fercore serve` (fercore/serve.py)
{f"user {user};" if user else ""}
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  # a browser without the cookie gets a random key; with it, its own key: the same process every time
  map $cookie_{ROUTE_COOKIE} $ferlab_key {{ "" $request_id; default $cookie_{ROUTE_COOKIE}; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; "" close; }}
  upstream ferlab {{
    hash $ferlab_key consistent;
{servers}
  }}
  server {{
    listen {listen};
    client_max_body_size {max_upload_mb}m;
    proxy_request_buffering off;
    location / {{
      proxy_pass http://ferlab;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_read_timeout 1d;
      proxy_send_timeout 1d;
      add_header Set-Cookie "{ROUTE_COOKIE}=$ferlab_key; Path=/; SameSite=Lax; HttpOnly" always;
    }}
  }}
}}
"""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def check(processes: int, port: int) -> str:
    """The nginx to run, or a plain sentence why `serve` cannot start."""
    if processes < 1:
        raise UserError(f"--processes must be at least 1 (got {processes}).")
    if not 0 < port < 65536:
        raise UserError(f"--port must be a TCP port, 1-65535 (got {port}).")
    nginx = nginx_path()
    if nginx is None:
        raise UserError("nginx is not installed (apt-get install nginx): `serve` needs it in front of the app "
                        "processes. One process needs no proxy: streamlit run streamlit_app.py")
    return nginx


def serve(db_url: str, processes: int, port: int = 8501, address: str = "localhost", ready=None) -> int:
    """Run until interrupted (or until nginx or an app process stops); returns the exit status. `ready(info)` is
    called once nginx answers, with the backends' ports and pids (for tests and the command's message)."""
    nginx = check(processes, port)
    folder = Path(tempfile.mkdtemp(prefix="ferlab-nginx-"))
    backends = free_ports(processes)
    threads = str(max(1, (os.cpu_count() or 2) // processes))
    db = db_url if "://" in db_url else str(Path(db_url).expanduser().resolve())   # the apps run in the repo
    env = {**os.environ, "FER_DB_URL": db, "OMP_NUM_THREADS": threads}
    apps = [subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(p),
                              "--server.address", "127.0.0.1", "--server.headless", "true"],
                             cwd=REPO, env=env, start_new_session=True, stdout=sys.stderr.fileno())
            for p in backends]   # their banners and logs on stderr: stdout is the command's own (--json)
    proxy = None
    stopping = []

    def stop(*_):
        stopping.append(True)
    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        _wait_healthy(backends, apps)
        (folder / "nginx.conf").write_text(nginx_config(backends, address, port, folder, user=_workers_user(folder)))
        proxy = subprocess.Popen([nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                                 start_new_session=True)
        _wait_healthy([port], [proxy], host=address if address not in ("0.0.0.0", "::") else "127.0.0.1")
        if ready:
            ready({"url": f"http://{address}:{port}", "backends": backends, "pids": [a.pid for a in apps],
                   "nginx_pid": proxy.pid, "threads_per_process": int(threads), "folder": str(folder)})
        while not stopping and proxy.poll() is None and all(a.poll() is None for a in apps):
            time.sleep(0.2)
        return 0 if stopping else 1
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for p in ([proxy] if proxy else []) + apps:
            _stop(p)
        shutil.rmtree(folder, ignore_errors=True)


def _workers_user(folder: Path) -> str | None:
    """Started as root, nginx's workers drop to an unprivileged user, who must be able to use its temporary
    folders: "nobody" and its group, given those folders. Otherwise the workers are this user: nothing to do."""
    if os.geteuid() != 0:
        return None
    import grp
    import pwd
    nobody = pwd.getpwnam("nobody")
    folder.chmod(0o711)
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / name).mkdir(exist_ok=True)
        os.chown(folder / name, nobody.pw_uid, nobody.pw_gid)
    return f"nobody {grp.getgrgid(nobody.pw_gid).gr_name}"


def _wait_healthy(ports: list[int], procs, host: str = "127.0.0.1", timeout: float = 120) -> None:
    import urllib.error
    import urllib.request
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            if any(p.poll() is not None for p in procs):
                raise UserError(f"A process stopped while starting (port {port} in use, or see its output above).")
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=5):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise UserError(f"Nothing answered on port {port} within {timeout:.0f} s.") from None
                time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
