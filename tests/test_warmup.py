"""The server's background warm-up (fercore/ui/warmup.py): the first page needs no torch, and what the first student
needs next (the starter's network, the face detectors, the training device) is in the process's shared caches
before they ask."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fercore.jobs.runfile import ensure_starter
from fercore.store import RunStore

REPO = Path(__file__).resolve().parent.parent


def test_the_run_store_opens_without_torch_so_a_first_page_does_not_wait_for_it(db):
    ensure_starter(RunStore(db))
    code = ("import sys; from fercore.ui import state; from fercore.jobs import liveness; s = state.get_store(); "
            "s.list_runs(); liveness.worker_status(s); print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, FER_DB_URL=db, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_warm_up_loads_the_starter_into_the_shared_cache_the_pages_use(db, monkeypatch):
    from fercore.predict import faces, predictor
    from fercore.ui import state, warmup
    starter = ensure_starter(RunStore(db))
    state._predictor.clear()
    loads = []
    real = predictor.load_predictor
    monkeypatch.setattr(predictor, "load_predictor", lambda store, run: loads.append(run) or real(store, run))
    assert warmup.training_device_label() == "checking..." or "torch" in warmup.finished()
    done = warmup.warm_up(db)
    assert set(done) == {name for name, _ in warmup.STEPS}, "every step finished"
    assert loads == [starter.id], "the starter's network was loaded once"
    pred = state._predictor(db, starter.id, str(RunStore(db).get_run(starter.id).checkpoint))
    assert loads == [starter.id], "and the page's call finds it in the cache"
    assert pred.classes and faces._detector.cache_info().currsize == 1
    assert warmup.training_device_label().startswith(("CPU", "GPU"))
