"""Reads kosoku's JSON reports: prints the verdict counts and exits 1 unless every case is OK or
INFORMATIONAL (and its close OK or INFORMATIONAL). NON-STRICT fails too: UTF-8 is checked as bytes
arrive, so 6.4.3 and 6.4.4 must come out OK.

usage: verdicts.py REPORTS_DIR LABEL [EXPECTED]

EXPECTED, when given, is how many cases were selected: a case without a report is a failure too
(the fuzzing server reports only the cases the client ran; "case" is a case's 1-based position).
"""
import collections
import glob
import json
import sys

reports, label = sys.argv[1], sys.argv[2]
expected = int(sys.argv[3]) if len(sys.argv) > 3 else None
verdicts = collections.Counter()
bad = []
seen = set()
for path in sorted(glob.glob(reports + "/*.json")):
    with open(path) as f:
        report = json.load(f)
    if "case" not in report or "behavior" not in report:
        continue
    verdicts[report["behavior"]] += 1
    seen.add(report["case"])
    if report["behavior"] not in ("OK", "INFORMATIONAL") or report["behaviorClose"] not in ("OK", "INFORMATIONAL"):
        bad.append(f'{report.get("id", path)}: {report["behavior"]} / {report["behaviorClose"]}')
print(f"{label} verdicts:", dict(verdicts))
for line in bad:
    print("  not conformant:", line)
total = sum(verdicts.values())
missing = sorted(set(range(1, expected + 1)) - seen) if expected is not None else []
if missing:
    print(f"  no report for {len(missing)} of {expected} cases, by position:", " ".join(map(str, missing)))
print(f"{label}: {total - len(bad)} passed, {len(bad)} failed" + (f", {len(missing)} missing" if missing else ""))
sys.exit(1 if bad or missing or total == 0 else 0)
