"""Architecture study: sweep a grid of configurations on one budget (resumable), then write the analysis report."""

# Modules, in data-flow order: grid (TOML grid -> validated points), sweep (train, test and time each point:
# run_study), results (the study folder -> one Row per finished point), findings (the numbers and what they
# say), report (report.md and results.csv: write_report) and plots.

from nextchar.study.findings import anomalies, by_accuracy, identical, noise, pareto, spearman
from nextchar.study.grid import Point, load_grid, parse_sets
from nextchar.study.plots import write_plots
from nextchar.study.report import COLUMNS, results_csv, write_report
from nextchar.study.results import NGRAM_DIR, STUDY_FILE, Row, load_rows
from nextchar.study.sweep import config_diff, measure_latency, run_study

__all__ = ["COLUMNS", "NGRAM_DIR", "STUDY_FILE", "Point", "Row", "anomalies", "by_accuracy", "config_diff",
           "identical", "load_grid", "load_rows", "measure_latency", "noise", "pareto", "parse_sets",
           "results_csv", "run_study", "spearman", "write_plots", "write_report"]
