"""Numbers, durations and run labels as people read them ("-" for a missing value)."""
from __future__ import annotations

import math


def pct(v, digits: int = 1) -> str:
    return "-" if not _finite(v) else f"{v * 100:.{digits}f} %"


def num(v, digits: int = 4) -> str:
    return "-" if not _finite(v) else f"{v:.{digits}g}"


def duration(seconds) -> str:
    """1 s (anything shorter too: 'about 0 s' reads as nothing), 12 s, 3 min 05 s, 1 h 02 min."""
    if not _finite(seconds):
        return "-"
    s = max(int(round(seconds)), 1) if seconds >= 0 else int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def run_label(run) -> str:
    """'12 · lesson-lr-0.01 (finished)' for select boxes."""
    return f"{run.id} · {run.name} ({run.status})"


def accuracy_label(run) -> str:
    """The accuracy of a run (`Run.accuracy`) with the split it is on, and val beside test where the run has both:
    '63.1 % test · 62.0 % val', '62.0 % val', or 'not evaluated'."""
    parts = [f"{pct(v)} {name}" for name, v in (("test", run.test_accuracy), ("val", run.val_accuracy))
             if _finite(v)]
    return " · ".join(parts) or "not evaluated"


def headline_accuracy(run) -> str:
    """The one number, for chips and titles: '63.1 % (test)', '62.0 % (val)', or 'not evaluated'."""
    return f"{pct(run.accuracy)} ({run.accuracy_split})" if _finite(run.accuracy) else "not evaluated"


def classes_text(classes) -> str:
    return ", ".join(classes) if classes else "all"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_progress(run) -> tuple[float, str]:
    """A running run's progress as (fraction done, 'epoch 3/10, batch 40/200, about 2 min 05 s left'), from what
    its worker last reported; during the final evaluation no ETA (the time left is not known)."""
    p = run.progress or {}
    if p.get("phase") == "evaluating":
        tta = "" if p.get("tta") in (None, "none") else f" with {p['tta']} TTA"
        return 1.0, f"final evaluation of the chosen checkpoint on {p.get('images', 0):,} images{tta}..."
    if not p.get("batches"):
        return 0.0, "preparing the data..."
    epochs = p.get("epochs") or run.config.epochs or 1
    done = (max(p.get("epoch", 1), 1) - 1 + p.get("batch", 0) / max(p.get("batches", 1), 1)) / epochs
    return min(max(done, 0.0), 1.0), (f"epoch {p.get('epoch', 1)}/{epochs}, batch {p.get('batch', 0)}/"
                                      f"{p['batches']}, about {duration(p.get('eta_s'))} left")
_MARKDOWN = set("\\`*_{}[]()#+!|<>~$:")


def plain(text) -> str:
    """User text (a run, dataset or display name, a zip's folder names, notes) made safe to put inside a Markdown
    string (st.markdown, st.caption, st.success...): every character Markdown, Streamlit's :color[] and
    :material/icon: directives or LaTeX would read is escaped, so a name shows as typed and never as a link or an
    image."""
    out = "".join("\\" + c if c in _MARKDOWN else c for c in str(text)).replace("\n", " ")
    return out.replace("www.", "www\\.").replace("WWW.", "WWW\\.")   # no autolink either
