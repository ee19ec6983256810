#!/usr/bin/env bash
# Runs Autobahn's server cases (sections 1 to 13: 12 and 13 are permessage-deflate) through kosoku
# against Endpoints/echo.lua and fails if any case is FAILED, UNIMPLEMENTED or could not run.
# The case selection, and what it leaves out and why, is in cases.sh.
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
source "$ROOT/Tests/autobahn/cases.sh"
status=0
(cd "$OUT" && kosoku -p 2 "${autobahn_cases[@]}" -o "$OUT/reports" "ws://127.0.0.1:$PORT/echo") > "$OUT/kosoku.txt" 2>&1 || status=$?
tail -n 3 "$OUT/kosoku.txt"
python3 "$ROOT/Tests/autobahn/verdicts.py" "$OUT/reports" autobahn
[ "$status" -eq 0 ] || { echo "kosoku exited with $status"; cat "$OUT/kosoku.txt" | head -50; exit 1; }
