"""Shared fixtures: a private database, cache and torch home per test, and tiny run configs.

`db` is an SQLite file; the store's and the queue's tests use `any_db` instead, which runs each test twice:
on SQLite and on a real PostgreSQL server the session starts itself (tests/postgres_server.py; skipped, with the reason,
where no server can be started)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tiny models on a busy 2-core machine: one thread avoids OpenMP spin-waiting (tens of times slower)
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's runs.db, dataset cache or torch hub folder."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FER_CACHE_DIR", str(cache))
    monkeypatch.delenv("FER_DB_URL", raising=False)
    monkeypatch.delenv("FER_ARTIFACTS", raising=False)
    monkeypatch.delenv("FER_HOSTNAME", raising=False)
    hub = tmp_path_factory.mktemp("torch_hub")
    monkeypatch.setenv("TORCH_HOME", str(hub))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub / "hub"))
    yield


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "runs.db")


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole session, started on first use."""
    from postgres_server import Unavailable, start_server
    try:
        server = start_server()
    except Unavailable as e:
        pytest.skip(f"no PostgreSQL server for this test: {e}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def any_db(request, tmp_path, monkeypatch) -> str:
    """An empty database of each kind: an SQLite path, or the URL of a new database on the session's PostgreSQL
    server (its files under this test's own FER_ARTIFACTS)."""
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    url = request.getfixturevalue("pg_server").create_database()
    monkeypatch.setenv("FER_ARTIFACTS", str(tmp_path / "artifacts"))
    return url


@pytest.fixture
def tiny():
    """A run config that trains in a second or two on the CPU."""
    from fercore.config import RunConfig
    return RunConfig(data="synthetic:420", conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(16,),
                     batch_size=32, epochs=2, lr=3e-3, tta="none")


def needs_shared(name: str) -> Path:
    p = SHARED / name
    if not p.exists():
        pytest.skip(f"../shared/datasets/{name} is not available")
    return p


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture
def one_thread():
    """A tiny run gains nothing from threads, and on a busy CI machine extra threads make it crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: browser, PostgreSQL, load, fuzz or long-training tests; "
                                       "`python -m pytest -m 'not slow'` is the inner loop")
