"""Time a lab report opening in chromium with the network blocked, against plotly's own single-chart HTML file
(the cost of plotly.js itself on this machine), and say its size:

    python -m fercore report starter short-cpu -o report.html
    python tests/bench_report.py report.html [--screenshot report.png] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from browserkit import open_offline  # noqa: E402

SIZE_GOAL_MB, OPEN_GOAL_S = 5.0, 2.0


def plotly_baseline(folder: Path) -> Path:
    """One bar chart as plotly writes it, plotly.js inline (uncompressed): the floor of any offline plotly page."""
    import plotly.graph_objects as go
    path = folder / "plotly-baseline.html"
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    fig.write_html(path, include_plotlyjs=True, post_script="document.body.dataset.chartsDrawn = 'true'; "
                   "document.body.dataset.firstScreenDrawn = 'true';",
                   div_id="baseline")
    html = path.read_text().replace("<body>", "<body><p id='js-error'></p><div class='chart'>", 1)
    path.write_text(html.replace("</body>", "</div></body>", 1))
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report")
    p.add_argument("--screenshot", default=None)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    report = Path(args.report)
    runs = [open_offline(report, Path(args.screenshot) if args.screenshot and i == 0 else None)
            for i in range(args.repeat)]
    with tempfile.TemporaryDirectory() as tmp:
        base_runs = [open_offline(plotly_baseline(Path(tmp))) for _ in range(args.repeat)]
    base = [r["seconds"] for r in base_runs]
    first = runs[0]
    secs = [r["seconds"] for r in runs]
    firsts = [r["first_screen"] for r in runs]
    size = report.stat().st_size / 1e6
    print(f"report: {size:.2f} MB (goal < {SIZE_GOAL_MB} MB); {first['drawn']}/{first['charts']} charts drawn, "
          f"{first['faces']} faces, {len(first['refused'])} requests refused")
    print(f"open to the first screen drawn (plotly.js ready): median {statistics.median(firsts):.2f} s, best "
          f"{min(firsts):.2f} s")
    print(f"open to every chart drawn: median {statistics.median(secs):.2f} s, best {min(secs):.2f} s over {len(secs)} "
          f"(goal < {OPEN_GOAL_S} s); plotly's own one-chart file: median {statistics.median(base):.2f} s, best "
          f"{min(base):.2f} s")
    print(f"renderer CPU time to every chart drawn (main thread / whole renderer; what an idle machine would wait, "
          f"roughly): report median {statistics.median(r['cpu_s'] for r in runs):.2f} / "
          f"{statistics.median(r['process_cpu_s'] for r in runs):.2f} s, plotly's one-chart file median "
          f"{statistics.median(r['cpu_s'] for r in base_runs):.2f} / "
          f"{statistics.median(r['process_cpu_s'] for r in base_runs):.2f} s")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
