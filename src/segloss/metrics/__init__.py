"""Metrics: pure functions over generated text and per-example scores (no model needed, except the optional
log-likelihood scorer in :mod:`segloss.metrics.qa`).

* :mod:`segloss.metrics.formulas` — math metrics (final answer, formula sets, step errors);
* :mod:`segloss.metrics.qa` — multiple-choice metrics;
* :mod:`segloss.metrics.stats` — bootstrap CIs, permutation tests, correlation;
* :mod:`segloss.metrics.roscoe` — ROSCOE reasoning scores (optional extra, imported on demand).

Definitions of every metric: ``docs/metrics.md``.
"""

from segloss.metrics.stats import bootstrap_ci, paired_permutation_test, pearson, summarize

__all__ = ["bootstrap_ci", "paired_permutation_test", "pearson", "summarize"]
