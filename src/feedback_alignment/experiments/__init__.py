"""Experiments: the papers' task families on one scaffold.

``run`` (the training loop, the rule factory, progress), ``results`` (statistics, tables, JSON
with provenance, plots), ``papers`` (the papers' figures with their REFERENCE.md tags),
``registry`` (tasks and groups for ``feedback-alignment reproduce``), ``render`` (the docs'
tables from ``docs/results/*.json``); and one module per task family holding only its model,
data, metric and defaults (``principled/`` is split by claim).
"""
