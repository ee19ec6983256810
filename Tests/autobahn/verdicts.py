"""Reads kosoku's JSON reports: prints the verdict counts and exits 1 unless every case is OK,
NON-STRICT or INFORMATIONAL (and its close OK or INFORMATIONAL).

usage: verdicts.py REPORTS_DIR LABEL
"""
import collections
import glob
import json
import sys

reports, label = sys.argv[1], sys.argv[2]
verdicts = collections.Counter()
bad = []
for path in sorted(glob.glob(reports + "/*.json")):
    with open(path) as f:
        report = json.load(f)
    if "case" not in report or "behavior" not in report:
        continue
    verdicts[report["behavior"]] += 1
    if report["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL") or report["behaviorClose"] not in ("OK", "INFORMATIONAL"):
        bad.append(f'{report.get("id", path)}: {report["behavior"]} / {report["behaviorClose"]}')
print(f"{label} verdicts:", dict(verdicts))
for line in bad:
    print("  not conformant:", line)
total = sum(verdicts.values())
print(f"{label}: {total - len(bad)} passed, {len(bad)} failed")
sys.exit(1 if bad or total == 0 else 0)
