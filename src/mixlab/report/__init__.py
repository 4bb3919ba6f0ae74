"""Forgetting statistics, tables, plots and reports.

The entry point is :func:`mixlab.report.html.write_report`; statistics live in
:mod:`mixlab.report.forgetting` and :mod:`mixlab.report.stats`.
"""
