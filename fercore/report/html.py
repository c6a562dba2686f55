"""A Report as one self-contained HTML file: it opens anywhere, offline, and asks the network for nothing.

plotly.js (4.8 MB) is included once, gzip-compressed and base64-encoded (about 1.9 MB), and unpacked by the
browser's own DecompressionStream before the charts are drawn from their JSON; without that a report of two runs
would be over 5 MB before its first chart. Faces are data: URIs. All text is HTML-escaped by Jinja2's autoescape;
figure JSON is made safe inside <script> by escaping every "<".
"""
from __future__ import annotations

import base64
import functools
import gzip
from pathlib import Path

import pandas as pd

from fercore import fmt
from fercore.report.content import Report, Table
from fercore.safeio import atomic_path

TEMPLATE = "report.html.j2"
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def render_html(report: Report) -> str:
    import jinja2
    from markupsafe import Markup
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["pct"] = fmt.pct
    env.filters["table"] = lambda t: Markup(table_html(t))
    env.filters["spec"] = lambda chart: Markup(figure_json(chart.figure))
    return env.get_template(TEMPLATE).render(r=report, plotly_gz=Markup(plotly_js_gzip_base64()),
                                             plotly_config=Markup(_safe_json(PLOTLY_CONFIG)))


def write_report(report: Report, path: Path) -> int:
    """Write the report's HTML to `path` (atomically); returns its size in bytes."""
    data = render_html(report).encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return len(data)


@functools.lru_cache(maxsize=1)
def plotly_js_gzip_base64() -> str:
    """plotly.js of the installed plotly package, gzipped and base64-encoded (computed once per process)."""
    from plotly.offline import get_plotlyjs
    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def figure_json(fig) -> str:
    return _safe_json_text(fig.to_json())


def _safe_json(obj) -> str:
    import json
    return _safe_json_text(json.dumps(obj))


def _safe_json_text(text: str) -> str:
    """JSON that cannot end its <script> element early: every '<' (only ever inside strings) as \\u003c."""
    return text.replace("<", "\\u003c")


def table_html(table: Table) -> str:
    """A frame as an HTML table, every cell escaped, accuracy-like columns as percentages."""
    # a settings column mixes numbers and text: shown as typed ("1", not "1.000")
    frame = table.frame.astype(str) if table.index else display_frame(table.frame)
    return frame.to_html(index=table.index, escape=True, na_rep="-", border=0, classes="table")


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for c in ("precision", "recall", "f1"):
        if c in out:
            out[c] = out[c].map(fmt.pct)
    return out
