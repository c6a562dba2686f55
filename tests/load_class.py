"""A whole class at once (issue 25): N students on the Classify page of one Streamlit server, each a light client
that speaks Streamlit's own protocol (no browser), so that the figures are the server's alone.

Each student opens the app (a websocket on /_stcore/stream, the first rerun_script), uploads a face photo the way the
browser does (a file_urls_request BackMsg, a PUT to /_stcore/upload_file/<session>/<file>, then a rerun whose widget
state names the file), waits for the result, then switches the explanation method and waits again. While a student
is idle its sidebar's self-refreshing fragments are rerun as the browser reruns them (the auto_rerun ForwardMsg).

"The result" is the page's keyed container RESULT_KEY, drawn once every face is scored and explained (pages/
classify.py); a switch is done when its (fragment or full) run finished with an image drawn and no error.

    python tests/load_class.py --students 1,10,30      # the table: one fresh class per N on one server
    python tests/load_class.py --students 30 --spread 0 --profile /tmp/server.svg   # all at once, py-spy profile
    python tests/load_class.py --students 30 --servers 2   # two app processes, students spread as by a sticky proxy
    python tests/load_class.py --students 30 --servers 2 --proxy   # the same behind nginx (`fercore serve`)

Every figure is measured on the client side from sending the first message to the finished run; the server's CPU
(seconds, cores used) and memory come from /proc.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import FileUploaderState, FileURLsRequest, UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from browserkit import REPO, face_photo, free_port, start_app, stop  # noqa: E402

RESULT_KEY = "classify_result"   # st.container(key=...) at the end of pages/classify.py: every face scored, explained
XSRF_COOKIE = "_streamlit_xsrf"
FINISHED = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY}


@dataclass
class Run:
    """What one script run drew, as far as a student needs it."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    status: int | None = None
    result: bool = False
    images: int = 0
    errors: list = field(default_factory=list)


class Student:
    def __init__(self, base: str, photo: Path):
        self.base, self.photo = base, photo
        self.session_id = ""
        self.widgets: dict[str, object] = {}      # label or kind -> the widget's proto (its id, options, fragment)
        self.fragment_of: dict[str, str] = {}     # widget id -> the fragment it was drawn in
        self.states: dict[str, WidgetState] = {}  # what the browser would send back
        self.run = Run()
        self.idle = asyncio.Event()
        self.file_urls: asyncio.Future | None = None
        self.timings: dict[str, float] = {}
        self.timers: dict[str, asyncio.Task] = {}   # fragment id -> its auto-rerun timer (one each, as in a browser)

    # --- the connection -----------------------------------------------------------------------------------
    async def open(self) -> None:
        t0 = time.perf_counter()
        self.cookies = await asyncio.to_thread(self._cookies)
        self.cookie = self.cookies.get(XSRF_COOKIE, "")
        ws_url = self.base.replace("http", "ws", 1) + "/_stcore/stream"
        # no keepalive pings: a busy server may not answer one within websockets' 20 s, and a browser waits longer
        self.ws = await websockets.connect(ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=120,
                                           ping_interval=None,
                                           additional_headers={"Cookie": self.cookie_header()})
        self.reader = asyncio.create_task(self._read())
        await self._rerun(ClientState(page_name=""))
        self.timings["open_s"] = time.perf_counter() - t0
        self.idle.set()

    def _cookies(self) -> dict[str, str]:
        """The cookies a browser would keep from its first request: Streamlit's XSRF token, and behind
        `python -m fercore serve` the proxy's key that keeps this student on one app process."""
        out = {}
        with urllib.request.urlopen(self.base + "/_stcore/health", timeout=60) as r:
            for header in r.headers.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                out[name.strip()] = rest.split(";")[0]
        return out

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    async def close(self) -> None:
        for task in [self.reader, *self.timers.values()]:
            task.cancel()
        await self.ws.close()

    async def _send(self, msg: BackMsg) -> None:
        await self.ws.send(msg.SerializeToString())

    async def _read(self) -> None:
        async for data in self.ws:
            msg = ForwardMsg()
            msg.ParseFromString(data)
            self._handle(msg)

    def _handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            self.session_id = msg.new_session.initialize.session_id
        elif kind == "delta":
            self._delta(msg.delta)
        elif kind == "script_finished":
            self.run.status = msg.script_finished
            if msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                self.run.finished.set()
        elif kind == "file_urls_response" and self.file_urls and not self.file_urls.done():
            self.file_urls.set_result(msg.file_urls_response)
        elif kind == "auto_rerun":
            fragment = msg.auto_rerun.fragment_id
            if fragment in self.timers:
                self.timers[fragment].cancel()
            self.timers[fragment] = asyncio.get_running_loop().create_task(
                self._auto_rerun(msg.auto_rerun.interval, fragment))

    def _delta(self, delta) -> None:
        which = delta.WhichOneof("type")
        if which == "add_block" and delta.add_block.id.endswith(f"-{RESULT_KEY}"):
            self.run.result = True
        if which != "new_element":
            return
        el = delta.new_element
        kind = el.WhichOneof("type")
        if kind in ("file_uploader", "selectbox", "multiselect"):
            widget = getattr(el, kind)
            self.widgets[kind if kind == "file_uploader" else widget.label] = widget
            if delta.fragment_id:
                self.fragment_of[widget.id] = delta.fragment_id
        elif kind == "imgs":
            self.run.images += 1
        elif kind == "exception" or (kind == "alert" and el.alert.format == el.alert.ERROR):
            self.run.errors.append(el.exception.message if kind == "exception" else el.alert.body)

    # --- what the browser does ------------------------------------------------------------------------------
    async def _rerun(self, state: ClientState, timeout: float = 300) -> Run:
        self.run = run = Run()
        state.widget_states.CopyFrom(WidgetStates(widgets=list(self.states.values())))
        await self._send(BackMsg(rerun_script=state))
        await asyncio.wait_for(run.finished.wait(), timeout)
        return run

    async def _auto_rerun(self, interval: float, fragment_id: str) -> None:
        """The sidebar's st.fragment(run_every=...): the browser asks for it every `interval` seconds."""
        while True:
            await asyncio.sleep(interval)
            if self.idle.is_set():
                self.idle.clear()
                try:
                    await self._rerun(ClientState(page_name="", fragment_id=fragment_id, is_auto_rerun=True))
                except websockets.ConnectionClosed:
                    return
                finally:
                    self.idle.set()

    async def upload(self) -> Run:
        """Upload the photo and wait for the whole result."""
        await self.idle.wait()
        self.idle.clear()
        t0 = time.perf_counter()
        self.file_urls = asyncio.get_running_loop().create_future()
        await self._send(BackMsg(file_urls_request=FileURLsRequest(
            request_id=uuid.uuid4().hex, file_names=[self.photo.name], session_id=self.session_id)))
        urls = (await asyncio.wait_for(self.file_urls, 60)).file_urls[0]
        data = self.photo.read_bytes()
        await asyncio.to_thread(self._put, self.base + urls.upload_url, data)
        uploader = self.widgets["file_uploader"]
        self.states[uploader.id] = WidgetState(id=uploader.id, file_uploader_state_value=FileUploaderState(
            uploaded_file_info=[UploadedFileInfo(name=self.photo.name, size=len(data), file_id=urls.file_id,
                                                 file_urls=urls)]))
        run = await self._rerun(ClientState(page_name=""))
        self.timings["upload_s"] = time.perf_counter() - t0
        self.idle.set()
        if not run.result or run.errors:
            raise RuntimeError(f"no result after the upload: {run.errors or 'the result marker was not drawn'}")
        return run

    def _put(self, url: str, data: bytes) -> None:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{self.photo.name}\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(url, data=body, method="PUT", headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", "X-Xsrftoken": self.cookie,
            "Cookie": self.cookie_header()})
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()

    async def switch_method(self) -> Run:
        """Pick the next explanation method and wait until its run has drawn the new maps."""
        await self.idle.wait()
        self.idle.clear()
        box = next(w for label, w in self.widgets.items() if label.startswith("Explanation"))
        current = self.states[box.id].string_value if box.id in self.states else box.options[box.default]
        choice = box.options[(list(box.options).index(current) + 1) % len(box.options)]
        self.states[box.id] = WidgetState(id=box.id, string_value=choice)
        t0 = time.perf_counter()
        run = await self._rerun(ClientState(page_name="", fragment_id=self.fragment_of.get(box.id, "")))
        self.timings["switch_s"] = time.perf_counter() - t0
        self.idle.set()
        if run.errors or not run.images:
            raise RuntimeError(f"no explanation after the switch: {run.errors or 'no image drawn'}")
        return run


# --- a class -------------------------------------------------------------------------------------------------
async def lesson(bases: list[str], photos: list[Path], spread: float, seed: int = 0) -> dict:
    """Everyone opens the page (student i on server i mod len(bases), as a proxy with sticky sessions spreads them),
    then each uploads within `spread` seconds and switches the method once."""
    rng = random.Random(seed)
    students = [Student(bases[i % len(bases)], p) for i, p in enumerate(photos)]
    opened = await asyncio.gather(*(s.open() for s in students), return_exceptions=True)
    failures = [repr(e) for e in opened if isinstance(e, BaseException)]

    async def work(s: Student) -> None:
        await asyncio.sleep(rng.uniform(0, spread))
        await s.upload()
        await s.switch_method()

    live = [s for s, e in zip(students, opened) if not isinstance(e, BaseException)]
    done = await asyncio.gather(*(work(s) for s in live), return_exceptions=True)
    failures += [repr(e) for e in done if isinstance(e, BaseException)]
    await asyncio.gather(*(s.close() for s in live), return_exceptions=True)
    return {"students": len(students), "failed": len(failures), "failures": failures[:5],
            **summary("open", [s.timings.get("open_s") for s in students]),
            **summary("upload", [s.timings.get("upload_s") for s in students]),
            **summary("switch", [s.timings.get("switch_s") for s in students])}


def summary(name: str, values: list) -> dict:
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return {}
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return {f"{name}_median_s": round(statistics.median(xs), 2), f"{name}_p95_s": round(p95, 2),
            f"{name}_max_s": round(xs[-1], 2)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def photos_for(n: int, folder: Path, offset: int) -> list[Path]:
    """n different face photos (different images: no student is served from another's cached result)."""
    return [face_photo(folder / f"student{offset + i}.jpg", index=offset + i) for i in range(n)]


def run_table(sizes: list[int], spread: float, base: str | None = None, profile: str | None = None,
              pid: int | None = None, servers: int = 1, proxy: bool = False) -> list[dict]:
    """One class per size against `servers` app processes over one fresh database (or the running server `base`).
    Several processes share the cores: each gets torch threads = cores / servers. With `proxy`, the processes are
    started by `python -m fercore serve` and every student goes through its nginx."""
    tmp = Path(tempfile.mkdtemp(prefix="fer-load-class-"))
    procs, pids, bases = [], [pid] if pid else [], [base] if base else []
    if proxy and base is None:
        serving, ready = start_serve(tmp / "runs.db", servers)
        procs, pids, bases = [serving], ready["pids"], [ready["url"]]
        base = ready["url"]
    warm_bases = [f"http://127.0.0.1:{p}" for p in ready["backends"]] if proxy and procs else None
    if base is None:
        threads = str(max(1, (os.cpu_count() or 2) // servers))
        for _ in range(servers):
            port = free_port()
            procs.append(start_app(tmp / "runs.db", port, OMP_NUM_THREADS=threads))
            bases.append(f"http://127.0.0.1:{port}")
        pids = [p.pid for p in procs]
    spy = None
    try:
        for b in warm_bases or bases:   # warm each process (directly): imports, the starter, the face detectors
            warm = asyncio.run(lesson([b], photos_for(1, tmp, 999), spread=0))
            if warm["failed"]:
                raise RuntimeError(f"a single student failed: {warm['failures']}")
        if profile and pids:
            spy = subprocess.Popen(["py-spy", "record", "-o", profile, "--pid", str(pids[0]), "--rate", "50",
                                    "--format", "speedscope" if profile.endswith(".json") else "flamegraph"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows, offset = [], 0
        for n in sizes:
            photos = photos_for(n, tmp, offset)
            offset += n
            cpu0, t0 = sum(map(cpu_seconds, pids)), time.perf_counter()
            row = asyncio.run(lesson(bases, photos, spread))
            wall = time.perf_counter() - t0
            if pids:
                used = sum(map(cpu_seconds, pids)) - cpu0
                row.update(server_cpu_s=round(used, 1), server_cores=round(used / wall, 2),
                           server_rss_mb=round(sum(map(rss_mb, pids))))
            row.update(servers=len(pids) if proxy else len(bases), proxy="nginx" if proxy else None,
                       wall_s=round(wall, 1), spread_s=spread, load=round(os.getloadavg()[0], 1))
            rows.append(row)
            print(json.dumps(row), flush=True)
        return rows
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        for proc in procs:
            stop(proc, timeout=60 if proxy else 10)   # `fercore serve` stops nginx and its apps first


def start_serve(db: Path, processes: int) -> tuple[subprocess.Popen, dict]:
    """`python -m fercore serve` on a free port: the running command and what it said when ready (its URL, the app
    processes' pids)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fercore", "--db", str(db), "--json", "serve", "--processes",
                             str(processes), "--port", str(port), "--address", "127.0.0.1"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()
    if not line.startswith("{") or "pids" not in line:
        stop(proc)
        raise RuntimeError(f"`fercore serve` did not start: {line.strip() or 'no output'}")
    return proc, json.loads(line)


def markdown(rows: list[dict]) -> str:
    out = ["| students | servers | upload -> result median / p95 (s) | method switch median / p95 (s) "
           "| page open median (s) | failed | server CPU cores used | server RSS (MB) |", "|---" * 8 + "|"]
    for r in rows:
        out.append(f"| {r['students']} | {r['servers']} | {r.get('upload_median_s')} / {r.get('upload_p95_s')} | "
                   f"{r.get('switch_median_s')} / {r.get('switch_p95_s')} | {r.get('open_median_s')} | {r['failed']} | "
                   f"{r.get('server_cores', '-')} | {r.get('server_rss_mb', '-')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", default="1,10,30", help="class sizes, comma-separated (one class each)")
    ap.add_argument("--spread", type=float, default=10.0,
                    help="students upload at random moments within this many seconds (0: all at once)")
    ap.add_argument("--url", help="a running server instead of a fresh one (its pid with --pid for CPU figures)")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--servers", type=int, default=1,
                    help="app processes over one database, students spread over them (a proxy with sticky sessions)")
    ap.add_argument("--proxy", action="store_true",
                    help="start the processes with `python -m fercore serve` and send every student through its nginx")
    ap.add_argument("--profile", help="record the server with py-spy into this file (.svg, or .json: speedscope)")
    args = ap.parse_args()
    rows = run_table([int(n) for n in args.students.split(",")], args.spread, args.url, args.profile, args.pid,
                     args.servers, args.proxy)
    print(f"\n{os.uname().nodename}, {os.cpu_count()} cores, load {os.getloadavg()}, cwd {REPO}")
    print(markdown(rows))


if __name__ == "__main__":
    main()
