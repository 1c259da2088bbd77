"""Experiments: grids of train+eval cells, their SQLite result store, the paper-style report, and the demo.

* :mod:`segloss.experiments.store` — :class:`~segloss.experiments.store.ResultStore` (one row per cell, safe under
  concurrent workers);
* :mod:`segloss.experiments.grid` — ``GridConfig`` and ``run_grid`` (``segloss grid``);
* :mod:`segloss.experiments.report` — ``write_report`` (``segloss report``);
* :mod:`segloss.experiments.demo` — ``DemoConfig`` and ``run_demo`` (``segloss demo``).

Nothing is imported eagerly: the store and grid modules do not need torch; the report needs only matplotlib/numpy.
See ``docs/experiments.md``.
"""
