"""The "Download report" buttons of Compare, Runs and Lessons: the report is built when the button is clicked
(st.download_button's deferred data), never on a rerun, so a page with the buttons costs nothing until one is used.
"""
from __future__ import annotations

import html
import io
import zipfile

import streamlit as st

from fercore.errors import user_message


def report_buttons(store, run_ids: list[int], key: str, lesson: str | None = None) -> None:
    """"Download report" (one HTML file) and "Figures (zip)" (PNG, SVG, CSV and the report) for the runs, or for
    a lesson's run group."""
    if not run_ids and not lesson:
        return
    stem = f"fer-report-{lesson}" if lesson else "fer-report-runs-" + "-".join(map(str, run_ids))
    a, b = st.columns(2)
    a.download_button("Download report", lambda: _report_html(store, run_ids, lesson), file_name=f"{stem}.html",
                      mime="text/html", key=f"report-{key}", on_click="ignore", icon=":material/description:",
                      help="One HTML file that opens anywhere offline: data and audit, what differs, curves, "
                           "confusion matrices, per-class metrics, diagnosis, mistakes with saliency and the "
                           "commands that reproduce each run.")
    b.download_button("Figures (zip)", lambda: _figures_zip(store, run_ids, lesson), file_name=f"{stem}.zip",
                      mime="application/zip", key=f"figures-{key}", on_click="ignore", icon=":material/folder_zip:",
                      help="Each chart as PNG and SVG (where the server has Chromium), each table as CSV, and the "
                           "report; takes a few seconds longer.")


def _report_html(store, run_ids, lesson) -> bytes:
    from fercore.report import build_report, render_html
    try:
        return render_html(build_report(store, run_ids, lesson=lesson)).encode("utf-8")
    except Exception as e:   # the download still arrives, and says in one sentence why it holds no report
        return _error_page(e)


def _figures_zip(store, run_ids, lesson) -> bytes:
    from fercore.report import build_report, figures_zip, render_html
    try:
        report = build_report(store, run_ids, lesson=lesson)
        return figures_zip(report, render_html(report).encode("utf-8"))[0]
    except Exception as e:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("README.txt", f"The figures could not be made: {user_message(e)}\n")
        return buf.getvalue()


def _error_page(e: Exception) -> bytes:
    return (f"<!DOCTYPE html><meta charset='utf-8'><title>No report</title>"
            f"<p>The report could not be built: {html.escape(user_message(e))}</p>").encode()
