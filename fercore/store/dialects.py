"""What differs between the databases the store runs on: SQLite on one machine, PostgreSQL for a department.

Only fercore.store imports this module. RunStore keeps its SQLite pragmas; everything PostgreSQL needs
beyond "another SQLAlchemy URL" is here:
- `postgresql://` URLs go to psycopg 3 (the driver requirements.txt installs), not SQLAlchemy's default psycopg2;
- dead pooled connections (a server restart, a dropped network link) are replaced before use;
- JSON without NaN: PostgreSQL's json type refuses the NaN/Infinity tokens Python writes for a diverged loss or
  an exploding gradient, so an infinity is written as 1e999 (valid JSON, read back by Python as inf; the
  diagnosis of exploding gradients needs it) and a NaN as null;
- a table whose ids were inserted explicitly (`db copy` keeps run ids) has its id sequence moved past them.
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, func, text
from sqlalchemy.exc import OperationalError

from fercore.errors import UserError

_INF = "\x00fer-inf\x00"   # placeholders no real value contains (PostgreSQL text cannot hold NUL at all)
_NEG_INF = "\x00fer-neg-inf\x00"


CLOCK_SKEW_ENV = "FER_CLOCK_SKEW_S"   # a test hook: shifts this process's own clock (the chaos test skews a host)


def now() -> datetime:
    """This process's clock as naive UTC, for the times a run records (created, finished). Whether a lease expired
    or a worker is alive is never judged by it, only by the database's clock (db_now), so that hosts whose clocks
    differ agree on it; $FER_CLOCK_SKEW_S shifts it, so a test can prove that."""
    skew = float(os.environ.get(CLOCK_SKEW_ENV) or 0)
    return datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=skew)


def db_now(dialect: str, plus_s: float = 0.0):
    """The database server's clock as naive UTC (how every time is stored), `plus_s` seconds ahead: one clock for
    every host that shares the database. SQLite's is the clock of the machine that holds the file, written in the
    text form SQLAlchemy writes (so the two compare as text)."""
    if dialect == "sqlite":
        return func.strftime("%Y-%m-%d %H:%M:%f000", "now", f"{plus_s:+.3f} seconds", type_=DateTime)
    return func.timezone("UTC", func.now(), type_=DateTime) + func.make_interval(0, 0, 0, 0, 0, 0, plus_s)


def retry_locked(fn):
    """Retry a store call when SQLite says the database is locked (another process is writing), or
    PostgreSQL broke a deadlock between two transactions by aborting ours."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        delay = 0.05
        for attempt in range(12):
            try:
                return fn(*a, **kw)
            except OperationalError as e:
                if not any(w in str(e).lower() for w in ("locked", "busy", "deadlock detected")) or attempt == 11:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
    return wrapper


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3, the driver the lab installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def redact_url(url_or_path: str) -> str:
    """A database URL as it may be shown to anyone: without its password (a file path stays as it is)."""
    if "://" not in str(url_or_path):
        return str(url_or_path)
    from sqlalchemy.engine import make_url
    try:
        return make_url(normalize_url(str(url_or_path))).render_as_string(hide_password=True)
    except Exception:   # noqa: BLE001 - an unparseable URL: show its scheme only, never what follows
        return str(url_or_path).split("://", 1)[0] + "://***"


class DatabaseUnreachable(UserError, ValueError):
    """The database server did not answer (down, wrong address or password); the message is a plain sentence.
    A ValueError, like every other mistake a user can fix, so the CLI and the pages show just the sentence."""


def unreachable(e: OperationalError, where: str) -> DatabaseUnreachable | None:
    """The sentence for a connection that failed before any query ran, or None for any other error."""
    reason = str(getattr(e, "orig", None) or e).strip().splitlines()
    if not reason or not any(w in reason[0].lower() for w in ("connection", "could not translate host", "timeout")):
        return None
    return DatabaseUnreachable(f"Could not reach the database {where}: {reason[0].rstrip('.')}. Check FER_DB_URL "
                               "(or --db) and that the server is running.")


def engine_options(url: str) -> dict:
    """Extra create_engine() arguments for this URL's database."""
    if url.startswith("sqlite"):
        return {}
    return {"pool_pre_ping": True, "json_serializer": dumps_finite,
            "connect_args": {"connect_timeout": 10}}   # a server that is down: a sentence in seconds, not minutes


def dumps_finite(value) -> str:
    """json.dumps that PostgreSQL accepts: inf -> 1e999, -inf -> -1e999, NaN -> null."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:   # rare: a diverged run's numbers
        out = json.dumps(_finite(value), allow_nan=False)
        return out.replace(json.dumps(_INF), "1e999").replace(json.dumps(_NEG_INF), "-1e999")


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if v != v else (_INF if v > 0 else _NEG_INF)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def move_id_sequence_past(conn, table: str) -> None:
    """After rows were inserted with explicit ids, the next id the database hands out must be a new one.
    SQLite takes max(id) + 1 by itself; PostgreSQL draws from a sequence that knows nothing of those rows."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                      f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"))

