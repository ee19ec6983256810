#!/usr/bin/env bash
# Runs Autobahn's server cases (sections 1 to 13: 12 and 13 are permessage-deflate) through kosoku
# against Endpoints/echo.lua and fails if any case is FAILED, UNIMPLEMENTED or could not run.
#
# Left out: the first case of each compression subsection (12.1.1 ... 13.7.1). kosoku 0.1.0's
# Python 3 translation of case12_x_x.py hashes the str '' on that path ("Strings must be encoded
# before hashing") before a byte reaches the server; the harness errors, whatever the server does.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
OUT="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
.build/release/wsgate --config Tests/autobahn/config.json --host 127.0.0.1 --port "$PORT" --endpoints Endpoints --workers 2 2>"$OUT/wsgate.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$PORT/api/v1/solution/health" >/dev/null && break
    sleep 0.2
done
cases=()
for section in 1 2 3 4 5 6 7 9 10 12 13; do cases+=(-i "$section.*"); done
for sub in 12.1 12.2 12.3 12.4 12.5 13.1 13.2 13.3 13.4 13.5 13.6 13.7; do cases+=(-x "$sub.1"); done
status=0
(cd "$OUT" && kosoku -p 2 "${cases[@]}" -o "$OUT/reports" "ws://127.0.0.1:$PORT/echo") > "$OUT/kosoku.txt" 2>&1 || status=$?
tail -n 3 "$OUT/kosoku.txt"
python3 - "$OUT/reports" <<'PY'
import collections, glob, json, sys
verdicts = collections.Counter()
bad = []
for path in sorted(glob.glob(sys.argv[1] + "/*.json")):
    report = json.load(open(path))
    if "case" not in report or "behavior" not in report:
        continue
    verdicts[report["behavior"]] += 1
    if report["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL") or report["behaviorClose"] not in ("OK", "INFORMATIONAL"):
        bad.append(f'{report.get("id", path)}: {report["behavior"]} / {report["behaviorClose"]}')
print("Autobahn verdicts:", dict(verdicts))
for line in bad:
    print("  not conformant:", line)
total = sum(verdicts.values())
print(f"autobahn: {total - len(bad)} passed, {len(bad)} failed")
sys.exit(1 if bad or total == 0 else 0)
PY
[ "$status" -eq 0 ] || { echo "kosoku exited with $status"; cat "$OUT/kosoku.txt" | head -50; exit 1; }
