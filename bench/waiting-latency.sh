#!/usr/bin/env bash
# Echo latency on a loop whose scripts wait: does a loop holding many runs
# suspended in Http.request answer an unrelated echo as fast as an idle one?
#
# Usage: bench/waiting-latency.sh        (no arguments; tunables below)
#
# Set-up (one server for the whole run): wsgate, 1 worker, pinned to
# SERVER_CPU (0) on a free port of 127.0.0.1, config
#   {"rateLimit": {"messagesPerSecond": 0}, "scripts": {"waitTimeoutMs": 120000}}
# and an endpoints folder (in the temp dir) holding
#   echo.lua   echoes text messages;
#   wait.lua   on a message: Http.request{url = <the message>, timeout_ms =
#              60000}, then sends "done".
# A "black hole" HTTP server (a few lines of Python, pinned to LOAD_CPU)
# accepts connections and reads requests but never answers; it counts the
# connections it accepted and holds, and closes them all on SIGUSR1.
#
# Phases, each measured with bench/wsload.c pinned to LOAD_CPU (1):
# `wsload -m echo -c 1 -p 1 -s ECHO_SIZE -d ECHO_SECS ws://.../echo` (one
# connection, one 64-byte message in flight), after an unreported warm-up of
# WARMUP_SECS (2) s of the same load and a wait for a quiet machine:
#   baseline   no waiting runs
#   waiting    bench/wssink.c (pinned to LOAD_CPU) holds WAITING (100)
#              WebSockets to /wait, each of which sent the black hole's URL:
#              before measuring, the black hole must hold WAITING new
#              connections (so WAITING runs are suspended in Http.request)
#              and no "done" may have come; after measuring, the same is
#              checked again (the runs stayed suspended throughout). Then the
#              black hole closes its connections, every run resumes with an
#              error and sends "done" (WAITING of them are expected), and the
#              sockets are closed.
# The order is baseline, then ROUNDS (3) times waiting + baseline, so that
# each waiting phase sits between two baselines (ROUNDS + 1 baselines).
#
# Reported: per phase kind the median, min and max of p50, p99 and p99.9
# latency (us) and msgs/s, the per-run values, the server's CPU (% of one
# core) and "other%" (unrelated processes; the sink and the black hole are
# left out, see foreign_pct in bench/lib.sh), the black hole's counts; the
# ratios waiting/baseline of the medians of p50, p99 and msgs/s; a table
# and one JSON line at the end. Runs whose other% exceeds NOISY_PCT (10)
# are counted in a warning under the table ("noisy_runs" in the JSON). Exit status is non-zero if an echo run
# reported errors, or a waiting phase could not be set up or verified.
#
# ECHO_SECS + WARMUP_SECS must stay well below wait.lua's 60 s timeout
# (checked: at most 45 s together).
#
# Tunables (environment): ROUNDS, WAITING, ECHO_SECS (10), ECHO_SIZE (64),
# WARMUP_SECS, SETUP_WAIT_SECS (30: how long the waiting sockets may take to
# reach the black hole), NOISY_PCT (10), PYTHON (python3), WSLOAD, WSSINK (where
# bench/wssink.c is built, default /tmp/wsgate-bench-wssink), WSGATE_BIN,
# WSGATE_HOST, SERVER_CPU, LOAD_CPU, QUIET_WAIT_SECS, QUIET_BUSY_PCT,
# KEEP_TMP=1 (keep logs). Example, a short try:
#   ECHO_SECS=3 ROUNDS=1 bench/waiting-latency.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

ROUNDS=${ROUNDS:-3}
WAITING=${WAITING:-100}
SETUP_WAIT_SECS=${SETUP_WAIT_SECS:-30}
NOISY_PCT=${NOISY_PCT:-10}     # other% above this marks a run as noisy in the summary
PYTHON=${PYTHON:-python3}
WSSINK=${WSSINK:-/tmp/wsgate-bench-wssink}

(( $# == 0 )) || { echo "usage: $0   (no arguments; see the header comment for the tunables)" >&2; exit 2; }
need_positive ROUNDS WAITING ECHO_SECS ECHO_SIZE SETUP_WAIT_SECS
need_nonnegative WARMUP_SECS
(( ECHO_SECS + WARMUP_SECS <= 45 )) || die "ECHO_SECS + WARMUP_SECS must be at most 45 (wait.lua's Http.request times out after 60 s)"

# The temp dir becomes the working directory: a binary named relatively must
# be resolved first.
[[ -e $WSGATE_BIN ]] && WSGATE_BIN=$(readlink -f "$WSGATE_BIN")

SERVERS=(wsgate)
bench_init

HOLE_PID=""
HOLE_OUT=""
SINK_PID=""
SINK_OUT=""
# lib.sh's cleanup stops the load generator and the server; the sink and the
# black hole are ours.
waiting_cleanup() {
  local rc=$?
  set +e
  if [[ -n $SINK_PID ]]; then stop_pid "$SINK_PID" wssink; SINK_PID=""; fi
  if [[ -n $HOLE_PID ]]; then stop_pid "$HOLE_PID" "black hole"; HOLE_PID=""; fi
  (exit "$rc")
  cleanup
}
trap waiting_cleanup EXIT

# ------------------------------------------------------------- helpers ----
# (stats, ratio and json_list are lib.sh's.)

# A field of the black hole's last STATE line: accepted, open, bytes, released.
hole() {
  local v
  v=$(grep '^STATE ' "$HOLE_OUT" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$1=//p")
  echo "${v:-0}"
}

# The sink's message count now, -1 when it cannot be read.
sink_count() { read_sink_count "$SINK_PID" "$SINK_OUT" || echo -1; }

# Results: space-separated, one entry per run, keyed "PHASE METRIC".
declare -A VALS=()
PHASE_FAILS=0
declare -a HOLE_ACCEPTED=() DONE_AFTER=() HELD=()

# One echo measurement, appended under phase $1 (baseline or waiting).
echo_run() {
  local phase=$1 n=$2 dir res ok=ok
  dir=$TMP_ROOT/$phase-$n; mkdir -p "$dir"
  log "$phase #$n: warm-up ${WARMUP_SECS}s"
  (( WARMUP_SECS == 0 )) || run_load -m echo -c 1 -p 1 -s "$ECHO_SIZE" -d "$WARMUP_SECS" "$URL" >"$dir/warm.json"
  log "$phase #$n: echo -c 1 -p 1 -s $ECHO_SIZE -d $ECHO_SECS"
  measured_run "$dir/run.json" -m echo -c 1 -p 1 -s "$ECHO_SIZE" -d "$ECHO_SECS" "$URL"
  res=$RUN_RES
  log "  $res"
  check_result "$phase echo" "$res" 1 || ok=FAIL
  local m
  for m in p50_us p99_us p999_us msgs_per_s; do VALS["$phase $m"]+="$(jval "$m" "$res") "; done
  VALS["$phase cpu"]+="$RUN_SRV_PCT "
  VALS["$phase other"]+="$RUN_OTHER_PCT "
  log "$phase #$n: p50 $(jnum p50_us "$res") us, p99 $(jnum p99_us "$res") us, $(jnum msgs_per_s "$res") msgs/s, server cpu ${RUN_SRV_PCT}%, other ${RUN_OTHER_PCT}%, $ok"
}

# A waiting phase: WAITING suspended runs around an echo measurement.
waiting_phase() {
  local n=$1 acc0 ready="" acc open cnt done_msgs held=true ok=ok
  acc0=$(hole accepted)
  SINK_OUT=$TMP_ROOT/sink-$n.out
  log "waiting #$n: opening $WAITING WebSockets to /wait, each sending $HOLE_URL"
  taskset -c "$LOAD_CPU" "$WSSINK" -c "$WAITING" -t "$HOLE_URL" "ws://127.0.0.1:$PORT/wait" >"$SINK_OUT" 2>"$SINK_OUT.err" &
  SINK_PID=$!
  OTHER_EXCLUDE_PIDS="$HOLE_PID $SINK_PID"
  for _ in $(seq 1 $(( SETUP_WAIT_SECS * 10 ))); do
    ready=$(sed -n 's/^READY //p' "$SINK_OUT")
    [[ -n $ready ]] && break
    alive "$SINK_PID" || break
    sleep 0.1
  done
  [[ $ready == "$WAITING" ]] || die "waiting #$n: $WAITING WebSockets to /wait did not open (READY ${ready:-none}): $(cat "$SINK_OUT.err")"
  # Every run must have reached the black hole and be waiting there.
  for _ in $(seq 1 $(( SETUP_WAIT_SECS * 10 ))); do
    acc=$(( $(hole accepted) - acc0 )); open=$(hole open)
    (( acc >= WAITING && open >= WAITING )) && break
    sleep 0.1
  done
  cnt=$(sink_count)
  log "waiting #$n: the black hole accepted $acc new connections and holds $open; the sockets got $cnt messages"
  if (( acc != WAITING || open != WAITING || cnt != 0 )); then
    log "WARNING: waiting #$n: expected $WAITING runs suspended in Http.request (accepted $acc, open $open, \"done\" $cnt)"
    ok=FAIL
  fi
  HOLE_ACCEPTED+=("$acc")

  echo_run waiting "$n"

  # Still suspended after the measurement?
  cnt=$(sink_count); open=$(hole open)
  if (( cnt != 0 || open != WAITING )); then
    log "WARNING: waiting #$n: after the measurement the black hole holds $open connections and the sockets got $cnt messages"
    held=false; ok=FAIL
  fi
  HELD+=("$held")

  # Release the runs: each resumes with an error and sends "done".
  log "waiting #$n: the black hole closes its connections"
  kill -USR1 "$HOLE_PID"
  done_msgs=0
  for _ in $(seq 1 100); do
    done_msgs=$(sink_count)
    (( done_msgs >= WAITING )) && break
    sleep 0.1
  done
  DONE_AFTER+=("$done_msgs")
  (( done_msgs == WAITING )) || { log "WARNING: waiting #$n: $done_msgs \"done\" messages after the release, expected $WAITING"; ok=FAIL; }
  stop_pid "$SINK_PID" wssink
  SINK_PID=""
  OTHER_EXCLUDE_PIDS=$HOLE_PID
  log "waiting #$n: sink: $(grep '^{' "$SINK_OUT" | tail -n 1)"
  sleep 1   # let the server close the sockets before the next baseline
  [[ $ok == ok ]] || { PHASE_FAILS=$(( PHASE_FAILS + 1 )); FAILED=1; }
}

report() {
  local ph m med mn mx line pj="" mj
  local -a vals
  local -A median=()
  echo
  echo "== echo latency with runs waiting: $((ROUNDS + 1)) baselines, $ROUNDS waiting phases of $WAITING runs suspended in Http.request"
  echo "   wsgate: $WSGATE_BIN (1 worker, cpu $SERVER_CPU); wsload -m echo -c 1 -p 1 -s $ECHO_SIZE -d $ECHO_SECS (after ${WARMUP_SECS}s warm-up), the sink and the black hole on cpu $LOAD_CPU"
  printf '%-9s %-10s %10s %-19s %s\n' phase metric median "min-max" "per run"
  for ph in baseline waiting; do
    mj=""
    for m in p50_us p99_us p999_us msgs_per_s; do
      read -ra vals <<<"${VALS["$ph $m"]}"
      read -r med mn mx < <(stats "${vals[@]}")
      median["$ph $m"]=$med
      printf '%-9s %-10s %10.0f %-19s %s\n' "$ph" "${m%_us}" "$med" "$(printf '%.0f-%.0f' "$mn" "$mx")" "${vals[*]}"
      mj+="${mj:+,}\"$m\":{\"median\":$med,\"min\":$mn,\"max\":$mx,\"values\":$(json_list "${vals[@]}")}"
    done
    printf '%-9s %-10s %10s %-19s %s\n' "$ph" "srv cpu%" "" "" "${VALS["$ph cpu"]% }"
    printf '%-9s %-10s %10s %-19s %s\n' "$ph" "other%" "" "" "${VALS["$ph other"]% }"
    read -ra vals <<<"${VALS["$ph cpu"]}"; mj+=",\"server_cpu_pct\":$(json_list "${vals[@]}")"
    read -ra vals <<<"${VALS["$ph other"]}"; mj+=",\"other_cpu_pct\":$(json_list "${vals[@]}")"
    pj+="${pj:+,}\"$ph\":{$mj}"
  done
  local r50 r99 r999 rm
  r50=$(ratio "${median[waiting p50_us]}" "${median[baseline p50_us]}")
  r99=$(ratio "${median[waiting p99_us]}" "${median[baseline p99_us]}")
  r999=$(ratio "${median[waiting p999_us]}" "${median[baseline p999_us]}")
  rm=$(ratio "${median[waiting msgs_per_s]}" "${median[baseline msgs_per_s]}")
  echo "   ratio of medians waiting/baseline: p50 $r50, p99 $r99, p99.9 $r999, msgs/s $rm"
  echo "   black hole: new connections per waiting phase ${HOLE_ACCEPTED[*]}; runs still suspended after the measurement: ${HELD[*]}; \"done\" after the release: ${DONE_AFTER[*]}"
  (( PHASE_FAILS == 0 )) || echo "   WARNING: $PHASE_FAILS waiting phase(s) could not be verified (see warnings above)"
  local noisy total
  read -r noisy total < <(echo "${VALS["baseline other"]} ${VALS["waiting other"]}" | count_noisy)
  noisy_warning "$noisy" "$total"
  echo
  line="{\"bench\":\"waiting-latency\",\"rounds\":$ROUNDS,\"waiting\":$WAITING,\"echo_secs\":$ECHO_SECS,\"size\":$ECHO_SIZE,\"warmup_secs\":$WARMUP_SECS,\"phases\":{$pj},\"ratio_waiting_vs_baseline\":{\"p50_us\":$r50,\"p99_us\":$r99,\"p999_us\":$r999,\"msgs_per_s\":$rm},\"blackhole_accepted\":$(json_list "${HOLE_ACCEPTED[@]}"),\"suspended_through_run\":$(json_list "${HELD[@]}"),\"done_after_release\":$(json_list "${DONE_AFTER[@]}"),\"failed_phases\":$PHASE_FAILS,\"noisy_runs\":$noisy}"
  echo "$line"
}

# ---------------------------------------------------------------- main ----
check_prereqs "$PYTHON:python3-minimal"
build_loadgen
build_c_tool "$BENCH_DIR/wssink.c" "$WSSINK"
# WAITING sockets in the sink and as many (twice: client and black hole
# side) in the server; lib.sh's raise_nofile asks for the idle test's limit.
need_nofile $(( 2 * WAITING + 256 )) "WAITING=$WAITING"
# The interpreter itself (not a wrapper such as a pyenv shim), so that the
# pid we signal is the black hole's.
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')

dir=$TMP_ROOT/wsgate
mkdir -p "$dir/endpoints"
cat >"$dir/endpoints/echo.lua" <<'EOF'
-- bench/waiting-latency.sh: echo text messages.
if websocketInfo.type == "data" then websocketInfo.send(websocketInfo.message) end
EOF
cat >"$dir/endpoints/wait.lua" <<'EOF'
-- bench/waiting-latency.sh: the message is a URL; wait for its answer, then say so.
if websocketInfo.type == "data" then
  Http.request{url = websocketInfo.message, timeout_ms = 60000}
  websocketInfo.send("done")
end
EOF
cat >"$TMP_ROOT/blackhole.py" <<'EOF'
# bench/waiting-latency.sh: accept, read, never answer. Prints a STATE line
# whenever its counts change; SIGUSR1 closes every connection it holds.
import selectors, signal, socket, sys

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(4096)
srv.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ)
conns = set()
accepted = received = released = 0
release = False

def on_usr1(signum, frame):
    global release
    release = True

signal.signal(signal.SIGUSR1, on_usr1)

def drop(c):
    sel.unregister(c)
    conns.discard(c)
    c.close()

changed = True
while True:
    if changed:
        print(f"STATE accepted={accepted} open={len(conns)} bytes={received} released={released}", flush=True)
        changed = False
    for key, _ in sel.select(timeout=0.1):
        if key.fileobj is srv:
            while True:
                try:
                    c, _ = srv.accept()
                except (BlockingIOError, InterruptedError):
                    break
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
                conns.add(c)
                accepted += 1
                changed = True
        else:
            c = key.fileobj
            try:
                data = c.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                received += len(data)
            else:
                drop(c)
            changed = True
    if release:
        release = False
        for c in list(conns):
            drop(c)
            released += 1
        changed = True
EOF

PORT=$(free_port)
HOLE_PORT=$(free_port)
while [[ $HOLE_PORT == "$PORT" ]]; do HOLE_PORT=$(free_port); done
HOLE_URL="http://127.0.0.1:$HOLE_PORT/never"
URL="ws://127.0.0.1:$PORT/echo"

HOLE_OUT=$TMP_ROOT/blackhole.out
log "starting the black hole on 127.0.0.1:$HOLE_PORT (cpu $LOAD_CPU)"
taskset -c "$LOAD_CPU" "$PYTHON" "$TMP_ROOT/blackhole.py" "$HOLE_PORT" >"$HOLE_OUT" 2>"$HOLE_OUT.err" &
HOLE_PID=$!
OTHER_EXCLUDE_PIDS=$HOLE_PID
for _ in $(seq 1 100); do
  grep -q '^STATE ' "$HOLE_OUT" && break
  alive "$HOLE_PID" || die "the black hole exited: $(cat "$HOLE_OUT.err")"
  sleep 0.1
done
grep -q '^STATE ' "$HOLE_OUT" || die "the black hole did not start: $(cat "$HOLE_OUT.err")"

WSGATE_CONFIG='{"rateLimit": {"messagesPerSecond": 0}, "scripts": {"waitTimeoutMs": 120000}}'
WSGATE_ENDPOINTS=$dir/endpoints
start_server wsgate "$dir" "$PORT"

echo_run baseline 1
for (( round = 1; round <= ROUNDS; round++ )); do
  log "== round $round/$ROUNDS"
  waiting_phase "$round"
  echo_run baseline $(( round + 1 ))
done

alive "$HOLE_PID" || die "the black hole exited during the run: $(cat "$HOLE_OUT.err")"
report
if [[ $FAILED != 0 ]]; then
  log "some runs reported errors or could not be verified (see warnings above)"
  exit 1
fi
