#!/usr/bin/env bash
# Runs the same Autobahn server cases as run.sh (sections 1 to 13, same exclusions, same verdict
# check) against wsgate speaking wss:// only.
#
# kosoku has no TLS client, so socat relays: kosoku --ws://--> socat --TLS--> wsgate. Each relayed
# connection is a fresh TLS session to the gateway (socat forks per connection). The certificate
# is a throw-away CA + leaf for 127.0.0.1 made here with openssl; socat does not verify it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

if ! command -v socat >/dev/null 2>&1; then
    echo "==> installing socat"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends socat
fi

OUT="$(mktemp -d)"
echo "==> reports and logs in $OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Throw-away CA and a leaf for localhost / 127.0.0.1.
(
    cd "$OUT"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=wsgate autobahn test CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout key.pem -out leaf.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile leaf.ext -out cert.pem 2>/dev/null
)

TLS_PORT="$(free_port)"
.build/release/wsgate --config Tests/autobahn/config.json --host 127.0.0.1 --port "$TLS_PORT" \
    --endpoints Endpoints --workers 2 --tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem" \
    2>"$OUT/wsgate.log" &
PID=$!
SOCAT_PID=""
cleanup() {
    [ -n "$SOCAT_PID" ] && kill "$SOCAT_PID" 2>/dev/null || true
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT

healthy=0
for _ in $(seq 50); do
    if curl -sf --cacert "$OUT/ca.pem" "https://127.0.0.1:$TLS_PORT/api/v1/solution/health" >/dev/null; then
        healthy=1; break
    fi
    sleep 0.2
done
if [ "$healthy" -ne 1 ]; then
    echo "wsgate did not answer the health route over https on port $TLS_PORT"; cat "$OUT/wsgate.log"; exit 1
fi

RELAY_PORT="$(free_port)"
# nodelay on both legs: without it Nagle's algorithm and delayed ACKs add ~40 ms to each small
# echo, and the sections that echo a thousand messages per case take most of an hour.
socat -b 65536 "TCP-LISTEN:$RELAY_PORT,bind=127.0.0.1,fork,reuseaddr,nodelay" "OPENSSL:127.0.0.1:$TLS_PORT,verify=0,nodelay" \
    2>"$OUT/socat.log" &
SOCAT_PID=$!
for _ in $(seq 50); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $RELAY_PORT), 1).close()" 2>/dev/null && break
    sleep 0.1
done
# The probe above went through the relay: it is one wss connection that sent nothing.

source "$ROOT/Tests/autobahn/cases.sh"
status=0
(cd "$OUT" && kosoku -p 2 "${autobahn_cases[@]}" -o "$OUT/reports" "ws://127.0.0.1:$RELAY_PORT/echo") > "$OUT/kosoku.txt" 2>&1 || status=$?
tail -n 3 "$OUT/kosoku.txt"
python3 "$ROOT/Tests/autobahn/verdicts.py" "$OUT/reports" autobahn-tls
[ "$status" -eq 0 ] || { echo "kosoku exited with $status"; head -50 "$OUT/kosoku.txt"; exit 1; }
echo "reports and logs in $OUT"
