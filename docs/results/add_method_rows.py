"""Append a run's summary.csv (as `leukolearn summary RUN --csv` writes it) to a
`leukolearn compare` summary.csv under a method name: for a method whose run directory is
gone but whose summary was committed (the paper CNN's PBC runs of an earlier session, same
protocol, data and seed, so the same folds).

    python docs/results/add_method_rows.py COMPARE_CSV SUMMARY_CSV METHOD
"""
import csv
import sys

compare_csv, summary_csv, method = sys.argv[1:]
with open(compare_csv) as f:
    rows = list(csv.DictReader(f))
    header = list(rows[0])
with open(summary_csv) as f:
    extra = [{"method": method, **r} for r in csv.DictReader(f)]
with open(compare_csv, "w", newline="") as f:
    w = csv.DictWriter(f, header)
    w.writeheader()
    w.writerows(extra + [r for r in rows if r["method"] != method])
