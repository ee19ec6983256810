#!/usr/bin/env bash
# Runs Autobahn's client cases (sections 1 to 13, see cases.sh) against wsgate's client role:
# kosoku -m fuzzingserver is the server, and one outbound connection opened from config, driven
# by client/_autobahn.lua, is the client under test. Fails if any case is FAILED, UNIMPLEMENTED,
# or has no report.
#
# How the fuzzing server is driven: /getCaseCount answers the number of selected cases (read here
# with `wsgate probe`); /runCase?case=K&agent=A runs the K-th selected case (1-based) on that
# connection; /updateReports?agent=A ends the run: kosoku then writes its reports (JSON and HTML,
# one per case the client ran) to -o and exits (1 if a case did not pass). The driver walks
# case=1..N by resetting its connection to the next URL on each close, then /updateReports.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
TIMEOUT="${AUTOBAHN_CLIENT_TIMEOUT:-1800}"
OUT="$(mktemp -d)"
echo "==> reports and logs in $OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

source "$ROOT/Tests/autobahn/cases.sh"
FUZZ_PORT="$(free_port)"
(cd "$OUT" && exec kosoku -m fuzzingserver "${autobahn_client_cases[@]}" -o "$OUT/reports" "127.0.0.1:$FUZZ_PORT") \
    >"$OUT/kosoku.txt" 2>&1 &
KOSOKU_PID=$!
PID=""
cleanup() {
    [ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    kill "$KOSOKU_PID" 2>/dev/null || true
    wait "$KOSOKU_PID" 2>/dev/null || true
}
trap cleanup EXIT

count=""
for _ in $(seq 50); do
    count="$(.build/release/wsgate probe --timeout 2 "ws://127.0.0.1:$FUZZ_PORT/getCaseCount" 2>/dev/null \
        | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["data"]))' 2>/dev/null)" && break
    count=""
    kill -0 "$KOSOKU_PID" 2>/dev/null || break
    sleep 0.2
done
if [ -z "$count" ]; then
    echo "kosoku's fuzzing server did not answer /getCaseCount on port $FUZZ_PORT"; cat "$OUT/kosoku.txt"; exit 1
fi
echo "==> $count client cases"

mkdir "$OUT/endpoints"
cp Tests/autobahn/client/_autobahn.lua "$OUT/endpoints/"
# Limits as Tests/autobahn/config.json (9.x sends messages of up to 16 MiB). A 16 MiB binary
# message is in the script's event twice (raw and base64), ~38 MB: the default scripts.memoryBytes
# (64 MiB) holds it.
cat >"$OUT/config.json" <<EOF
{
  "limits": {"maxMessageBytes": 16777216, "sendQueueBytes": 67108864},
  "outboundReconnect": {"initialDelayMs": 200, "maxDelayMs": 2000},
  "outbound": [{"name": "autobahn", "script": "_autobahn.lua", "content_type": "text",
                "url": "ws://127.0.0.1:$FUZZ_PORT/runCase?case=1&agent=wsgate&count=$count"}]
}
EOF

start=$SECONDS
.build/release/wsgate --config "$OUT/config.json" --host 127.0.0.1 --port "$(free_port)" \
    --endpoints "$OUT/endpoints" --workers 1 2>"$OUT/wsgate.log" &
PID=$!

# kosoku exits once the driver has opened /updateReports and the reports are written.
status=""
while [ $((SECONDS - start)) -lt "$TIMEOUT" ]; do
    if ! kill -0 "$KOSOKU_PID" 2>/dev/null; then
        status=0; wait "$KOSOKU_PID" || status=$?
        break
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "wsgate exited during the run"; tail -n 30 "$OUT/wsgate.log"; exit 1
    fi
    sleep 0.5
done
if [ -z "$status" ]; then
    echo "the client run did not finish within ${TIMEOUT}s (AUTOBAHN_CLIENT_TIMEOUT)"
    grep -o 'connecting to [^ ]*' "$OUT/wsgate.log" | tail -n 3
    tail -n 20 "$OUT/wsgate.log"
    exit 1
fi
echo "==> client run took $((SECONDS - start))s"
tail -n 2 "$OUT/kosoku.txt"
python3 "$ROOT/Tests/autobahn/verdicts.py" "$OUT/reports" autobahn-client "$count"
