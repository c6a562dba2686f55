"""Figures for a written report: each chart as PNG and SVG, each table as CSV, and all of it as one zip.

PNG and SVG come from Plotly's static export (kaleido 1.x), which draws the charts in a local Chrome or Chromium
(Debian's /usr/bin/chromium, or the browser named by $BROWSER_PATH); all charts go through one browser session.
Where there is no such browser the tables and the HTML report are still written, and `note` says why the images
are missing.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from fercore.report.content import Report

PNG_SCALE = 2          # twice the on-screen size: sharp in a printed report
WIDTH = 900            # pixels of a chart exported on its own (the page lays two side by side)
BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


@dataclass
class FigureExport:
    folder: str
    images: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    browser: str | None = None
    note: str = ""

    def to_json(self) -> dict:
        return {"folder": self.folder, "images": self.images, "tables": self.tables, "browser": self.browser,
                "note": self.note}


def export_browser() -> str | None:
    """The Chrome/Chromium the static export drives: $BROWSER_PATH if it exists, else the first one found."""
    named = os.environ.get("BROWSER_PATH")
    if named and Path(named).exists():
        return named
    for b in BROWSERS:
        found = b if Path(b).is_absolute() and Path(b).exists() else shutil.which(b)
        if found:
            return found
    return None


def write_figures(report: Report, folder: Path) -> FigureExport:
    """Write every table as CSV and every chart as PNG and SVG into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = FigureExport(str(folder))
    for t in report.tables.values():
        t.frame.to_csv(folder / f"{t.slug}.csv", index=t.index)
        out.tables.append(f"{t.slug}.csv")
    for i, d in enumerate(report.datasets, 1):
        if d["counts"] is not None:
            d["counts"].to_csv(folder / f"class-counts-{i}.csv")
            out.tables.append(f"class-counts-{i}.csv")
    out.browser = export_browser()
    if out.browser is None:
        out.note = ("No Chrome or Chromium was found for Plotly's static export, so the charts were not written as "
                    "PNG/SVG (install chromium, or set BROWSER_PATH to a Chrome); the tables are CSV and the HTML "
                    "report holds every chart.")
        return out
    try:
        out.images = _static_images(report, folder, out.browser)
    except Exception as e:   # a browser that would not start: the CSV files stand, and the note says why
        out.note = (f"Plotly's static export failed with {out.browser} ({type(e).__name__}: {e}), so the charts were "
                    "not written as PNG/SVG; the tables are CSV and the HTML report holds every chart.")
    return out


def _static_images(report: Report, folder: Path, browser: str) -> list[str]:
    import kaleido
    specs, names = [], []
    for c in report.charts:
        height = c.figure.layout.height or 450
        for kind in ("png", "svg"):
            names.append(f"{c.slug}.{kind}")
            specs.append({"fig": c.figure.to_dict(), "path": folder / names[-1],
                          "opts": {"format": kind, "width": WIDTH, "height": height,
                                   "scale": PNG_SCALE if kind == "png" else 1}})
    if not specs:
        return []
    previous = os.environ.get("BROWSER_PATH")
    os.environ["BROWSER_PATH"] = browser   # how kaleido's choreographer is told which browser to start
    try:
        # mathjax off: the charts use no LaTeX, and the default would fetch MathJax from a CDN
        kaleido.write_fig_from_object_sync(specs, kopts={"mathjax": False})
    finally:
        if previous is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = previous
    return [n for n in names if (folder / n).is_file()]


def figures_zip(report: Report, html: bytes | None = None) -> tuple[bytes, FigureExport]:
    """The figures, tables (and the HTML report, when given) as one zip file's bytes, for a download button."""
    with tempfile.TemporaryDirectory(prefix="fer-report-") as tmp:
        export = write_figures(report, Path(tmp))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for name in export.tables + export.images:
                z.write(Path(tmp) / name, f"figures/{name}")
            if html is not None:
                z.writestr("report.html", html)
            if export.note:
                z.writestr("figures/README.txt", export.note + "\n")
    return buf.getvalue(), export
