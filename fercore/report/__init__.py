"""Lab reports: one self-contained HTML file a student hands in, and the figures for a written report.

    content   what a report says, gathered from the store: dataset and audit, runs, charts, tables, diagnosis,
              the lesson's finding (`build_report`)
    gallery   misclassified faces of each run with a saliency overlay
    reproduce the `python -m fercore` commands that recreate each run from the same data
    html      the report as one HTML file: plotly.js once, inline and compressed; images as data: URIs
    export    each chart as PNG and SVG (Plotly's static export through a local Chromium), tables as CSV, a zip

The charts come from fercore.figures: Plotly, so that a report is one offline file with pictures to export, drawn
from the same data, colours and scales as the pages' ECharts charts (fercore.charts); the tables from
fercore.teach.comparison, as Compare shows them. The report sits above teach and predict (it needs both).
"""
from fercore.report.content import Report, build_report
from fercore.report.export import FigureExport, figures_zip, write_figures
from fercore.report.html import render_html, write_report

__all__ = ["Report", "build_report", "render_html", "write_report", "write_figures", "figures_zip", "FigureExport"]
