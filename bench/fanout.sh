#!/usr/bin/env bash
# Topic fan-out: one publisher, FANOUT_SUBS subscribers; how many deliveries
# per second does a server make, and how long until the LAST subscriber has
# a message? wsgate's Websocket.publish against two common ways of writing
# the same broadcast, in alternating rounds of one run.
#
# Usage: bench/fanout.sh [SERVER...]   (wsgate, node-ws, websockets; default all three)
#
# Servers, each pinned to SERVER_CPU (0), one process, one thread of
# WebSocket work, on a free port of 127.0.0.1, a fresh process per run:
#   wsgate      WSGATE_BIN (default .build/release/wsgate, copied into the
#               temp dir at the start, so that a rebuild during the run cannot
#               give the rounds different binaries), 1 worker, config
#                 {"rateLimit": {"messagesPerSecond": 0},
#                  "limits": {"maxConnections": FANOUT_SUBS + 1000}}
#               and an endpoints folder (in the temp dir) holding
#                 sub.lua  on "open": Websocket.subscribe{socket_id = ..., topic = "bench"}
#                 pub.lua  on "data": Websocket.publish{topic = "bench", message = ...}
#   node-ws     bench/peers/fanout-ws.js on `node` with Debian's node-ws
#               (NODE_PATH=/usr/share/nodejs): a message from /pub goes to
#               wss.clients.forEach(c => c !== sender && c.readyState ===
#               OPEN && c.send(data)), the broadcast of ws's README
#   websockets  bench/peers/fanout-websockets.py on the repository's test venv
#               (VENV, default .venv-test; created the way scripts/test does
#               when `import websockets` fails there): the asyncio server,
#               /sub connections in a set, a message from /pub goes to
#               websockets.asyncio.server.broadcast(subscribers, message)
# The peers answer GET /api/v1/solution/health like wsgate, so all three are
# started and checked for readiness alike (start_server-style, wait_ready).
#
# The load: bench/fanout.c (built with build_c_tool; pinned to LOAD_CPU, 1)
# opens FANOUT_SUBS WebSockets to /sub (FANOUT_SETUPS, 200, upgrades in
# flight; 101 and Sec-WebSocket-Accept checked) and one to /pub, then sends
# probe messages until one has reached every subscriber (wsgate subscribes
# in the "open" event, after the 101) and prints READY; 1 s into the
# SETTLE_SECS (2) s pause that follows, the server's RSS is read. Then
# FANOUT_WARMUP_SECS (2) s of unreported traffic, and two measured phases
# of FANOUT_SECS (10) s each, FANOUT_SIZE (64) byte text messages carrying a
# sequence number and the send time:
#   latency     one message in flight: the next is sent when every
#               subscriber has the last one
#   throughput  FANOUT_WINDOW (8) messages in flight
# With FANOUT_BUSY_POLL=1 (the default) the client spins on epoll_wait
# during the phases instead of sleeping: over loopback the kernel charges
# the sender for waking a sleeping receiver, which here made every server's
# deliveries cost it tens of per cent more than they would over a network.
# FANOUT_BUSY_POLL=0 lets it sleep (then "load cpu%" is its real use).
# Every received frame is checked (text, FIN, unmasked, length, padding, a
# sequence number sent and not seen before on that socket); a message a
# subscriber skips, or that is not everywhere FANOUT_MSG_TIMEOUT (10) s after
# it was sent, is counted missing; the client has an overall time limit.
#
# ROUNDS (3) rounds; the order rotates (round 1: wsgate node-ws websockets,
# round 2: node-ws websockets wsgate, ...); the machine must be quiet
# before each run (wait_quiet).
#
# Reported per server and phase: the median of the runs' deliveries/s
# (receipts inside the window / FANOUT_SECS; min-max and per-round values),
# msgs/s (deliveries/s / FANOUT_SUBS), the medians of publish -> last
# subscriber p50 and p99 (ms), of publish -> first subscriber p50 and of
# publish -> each delivery p50, the
# server's CPU (% of one core, over the window, from /proc), the client's
# CPU and "busy" share (time outside epoll_wait: near 100 means the client
# may be the bottleneck, not the server), the server's RSS with the
# subscribers connected (MiB, median), and "other%" (CPU of unrelated
# processes over the whole run, see foreign_pct in bench/lib.sh). Then the
# ratios of the medians wsgate/node-ws and wsgate/websockets of deliveries/s
# (throughput phase, latency phase; above 1 favours wsgate) and of the
# latency phase's publish -> last p50 (below 1 favours wsgate), a table and
# one JSON line at the end. Runs whose other% exceeds NOISY_PCT (10) are
# counted in a warning under the table ("noisy_runs" in the JSON). WARN and
# ERROR lines in wsgate's log, and anything a peer printed besides its
# banner, are shown under the table. Exit status is non-zero if a run had
# failed connections, bad frames, missing deliveries or errors.
#
# Tunables (environment): FANOUT_SUBS, FANOUT_SIZE (at least 40), FANOUT_SECS,
# FANOUT_WINDOW (1..64), FANOUT_WARMUP_SECS, FANOUT_SETUPS,
# FANOUT_MSG_TIMEOUT, FANOUT_BUSY_POLL, FANOUT_SRCS (source addresses
# 127.0.0.2.. for the client; default 0 up to 20000 subscribers, then one
# per 20000), ROUNDS, NOISY_PCT, FANOUT (where bench/fanout.c is built,
# default /tmp/wsgate-bench-fanout), NODE (node), VENV, WSGATE_BIN,
# WSGATE_HOST, SERVER_CPU, LOAD_CPU, QUIET_WAIT_SECS, QUIET_BUSY_PCT,
# KEEP_TMP=1 (keep logs). Example, a short try:
#   FANOUT_SUBS=1000 ROUNDS=1 FANOUT_SECS=3 bench/fanout.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

fanout_defaults
ROUNDS=${ROUNDS:-3}
NOISY_PCT=${NOISY_PCT:-10}     # other% above this marks a run as noisy in the summary
NODE=${NODE:-node}
NODE_MODULES=/usr/share/nodejs # Debian's node-ws lives here
VENV=${VENV:-$ROOT/.venv-test}
ALL_SERVERS=(wsgate node-ws websockets)

usage() { echo "usage: $0 [SERVER...]   (servers: ${ALL_SERVERS[*]}; default all; see the header comment for the tunables)" >&2; exit 2; }
declare -a SHOWN=()
pick_names ALL_SERVERS SHOWN "$@"
need_positive FANOUT_SUBS FANOUT_SECS FANOUT_WINDOW FANOUT_SETUPS FANOUT_MSG_TIMEOUT ROUNDS
need_nonnegative FANOUT_WARMUP_SECS
need_msg_size FANOUT_SIZE
(( FANOUT_WINDOW <= 64 )) || die "FANOUT_WINDOW must be 1..64"
[[ $FANOUT_BUSY_POLL == 0 || $FANOUT_BUSY_POLL == 1 ]] || die "FANOUT_BUSY_POLL must be 0 or 1"
FANOUT_SRCS=${FANOUT_SRCS:-$(( FANOUT_SUBS > 20000 ? (FANOUT_SUBS + 19999) / 20000 : 0 ))}
need_nonnegative FANOUT_SRCS

# The temp dir becomes the working directory: binaries named relatively must
# be resolved first.
[[ -e $WSGATE_BIN ]] && WSGATE_BIN=$(readlink -f "$WSGATE_BIN")
VENV=$(readlink -m "$VENV")

# check_prereqs knows wsgate; the peers are checked below.
SERVERS=()
[[ " ${SHOWN[*]} " == *" wsgate "* ]] && SERVERS=(wsgate)
bench_init

# ------------------------------------------------------------- helpers ----
# (stats, ratio, json_list, phase_line and the like are lib.sh's.)
fmt() {
  if [[ $2 == null ]]; then echo "-"; else awk -v f="$1" -v x="$2" 'BEGIN { printf f, x }'; fi
}

# The Debian package node-ws, and the venv with PyPI's websockets (made as
# scripts/test makes it). Only for the servers being run.
peer_prereqs() {
  local -a pkgs=()
  if [[ " ${SHOWN[*]} " == *" node-ws "* ]]; then
    [[ -f $NODE_MODULES/ws/package.json ]] || pkgs+=(node-ws)
  fi
  if [[ " ${SHOWN[*]} " == *" websockets "* ]] && ! "$VENV/bin/python" -c 'import websockets.asyncio.server' 2>/dev/null; then
    command -v python3 >/dev/null || pkgs+=(python3)
    python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
  fi
  apt_install "${pkgs[@]}"
  if [[ " ${SHOWN[*]} " == *" node-ws "* ]]; then
    NODE_PATH=$NODE_MODULES "$NODE" -e 'require("ws").WebSocketServer || process.exit(1)' 2>/dev/null \
      || die "node cannot load ws from $NODE_MODULES (is Debian's node-ws installed?)"
  fi
  if [[ " ${SHOWN[*]} " == *" websockets "* ]] && ! "$VENV/bin/python" -c 'import websockets.asyncio.server' 2>/dev/null; then
    log "creating $VENV (python3 -m venv; pip install -r Tests/integration/requirements.txt)"
    python3 -m venv "$VENV" >"$TMP_ROOT/venv.log" 2>&1 || { tail -n 20 "$TMP_ROOT/venv.log" >&2; die "python3 -m venv $VENV failed"; }
    { "$VENV/bin/pip" install -q --upgrade pip && "$VENV/bin/pip" install -q -r "$ROOT/Tests/integration/requirements.txt"; } \
      >>"$TMP_ROOT/venv.log" 2>&1 || { tail -n 20 "$TMP_ROOT/venv.log" >&2; die "pip install into $VENV failed"; }
    "$VENV/bin/python" -c 'import websockets.asyncio.server' || die "websockets still cannot be imported from $VENV"
  fi
}

# --------------------------------------------------------------- servers ----
# wsgate: lib.sh's start_wsgate with the bench's endpoints and config (set
# in main). The peers are started the same way: from their directory,
# pinned, the pid being the server itself (exec through taskset).
start_node-ws() {
  local dir=$1 port=$2
  SERVER_LOG=$dir/node-ws.log
  (cd "$dir" && NODE_PATH=$NODE_MODULES exec taskset -c "$SERVER_CPU" "$NODE" "$BENCH_DIR/peers/fanout-ws.js" "$port") \
    >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
}
start_websockets() {
  local dir=$1 port=$2
  SERVER_LOG=$dir/websockets.log
  (cd "$dir" && exec taskset -c "$SERVER_CPU" "$VENV/bin/python" "$BENCH_DIR/peers/fanout-websockets.py" "$port") \
    >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
}

# Server order of round $1: SHOWN rotated left by round - 1.
round_order() {
  local n=${#SHOWN[@]} i
  for (( i = 0; i < n; i++ )); do printf '%s ' "${SHOWN[$(( (i + $1 - 1) % n ))]}"; done
  echo
}

# What the server's log says beyond the normal: wsgate's WARN and ERROR
# lines, a peer's lines other than its "listening" banner.
log_notes() {
  local name=$1 file=$2
  [[ -f $file ]] || return 0
  if [[ $name == wsgate ]]; then
    grep -E '^[^ ]+ (WARN|ERROR) ' "$file" || true
  else
    grep -v ' listening on ' "$file" || true
  fi
}

# ----------------------------------------------------------------- runs ----
# Results: space-separated, one entry per round, keyed "SERVER PHASE METRIC"
# (per phase) or "SERVER METRIC" (per run).
declare -A VALS=() FAILS=() NOTES=()
PHASES=(latency throughput)
PHASE_METRICS=(deliveries_per_s msgs_per_s last_p50_us last_p99_us each_p50_us first_p50_us server_cpu_pct cpu_pct busy_pct)

# One run: fresh server NAME in round ROUND, the client, stop.
fanout_run() {
  local round=$1 name=$2 dir port out ready="" rss base_rss ok=ok rc=0
  dir=$TMP_ROOT/r$round-$name; mkdir -p "$dir"; chmod 755 "$dir"
  port=$(free_port)
  SERVER_NAME=$name
  log "round $round/$ROUNDS, $name: starting on 127.0.0.1:$port (cpu $SERVER_CPU)"
  "start_$name" "$dir" "$port"
  wait_ready "$port"
  sleep 0.5
  # shellcheck disable=SC2046  # pids, one word each
  base_rss=$(sum_rss "$SERVER_PID" $(descendants "$SERVER_PID"))

  local -a args=(-n "$FANOUT_SUBS" -s "$FANOUT_SIZE" -W "$FANOUT_WINDOW" -d "$FANOUT_SECS" -w "$FANOUT_WARMUP_SECS"
                 -P "$SETTLE_SECS" -k "$FANOUT_SETUPS" -T "$FANOUT_MSG_TIMEOUT" -C "$SERVER_PID")
  [[ $FANOUT_BUSY_POLL == 1 ]] && args+=(-b)
  (( FANOUT_SRCS > 0 )) && args+=(-S "$FANOUT_SRCS")
  out=$dir/fanout.out

  wait_quiet
  cpu_watch_start
  log "round $round/$ROUNDS, $name: fanout ${args[*]}"
  start_load "$out" "${args[@]}" "ws://127.0.0.1:$port/sub" "ws://127.0.0.1:$port/pub"
  # READY: every subscription is in place; the client now pauses SETTLE_SECS.
  ready=$(fanout_ready "$out")
  rss=null
  if [[ -n $ready ]]; then
    sleep 1
    # shellcheck disable=SC2046  # pids, one word each
    rss=$(sum_rss "$SERVER_PID" $(descendants "$SERVER_PID"))
    log "  READY $ready subscribers ($(sed -n 's/^READY [0-9]* \([0-9]*\)$/\1/p' "$out") ms after the last upgrade); server RSS $(( rss / 1024 )) MiB (before: $(( base_rss / 1024 )) MiB)"
  fi
  wait "$LOAD_PID" || rc=$?
  LOAD_PID=""
  cpu_watch_stop
  local run_srv=$RUN_SRV_PCT run_load=$RUN_LOAD_PCT run_other=$RUN_OTHER_PCT
  (( rc == 0 )) || { log "WARNING: $name: fanout exited with status $rc: $(head -c 2000 "$out.err")"; ok=FAIL; }
  [[ -s $out.err ]] && log "  fanout stderr: $(head -c 2000 "$out.err")"
  alive "$SERVER_PID" || { log "WARNING: $name died during the run"; ok=FAIL; }
  stop_server

  local ph res m summary=""
  for ph in "${PHASES[@]}"; do
    res=$(phase_line "$ph" "$out")
    log "  $ph: ${res:-(no result)}"
    if [[ -z $res ]]; then
      ok=FAIL
    else
      fanout_phase_ok "$name $ph" "$res" "$FANOUT_SUBS" "subscribers open" || ok=FAIL
    fi
    for m in "${PHASE_METRICS[@]}"; do VALS["$name $ph $m"]+="$(jval "$m" "$res") "; done
    summary+="$ph $(jnum deliveries_per_s "$res") deliveries/s, last p50 $(fmt '%.1f' "$(us_to_ms "$(jval last_p50_us "$res")")") ms; "
  done
  VALS["$name rss_kib"]+="$rss "
  VALS["$name base_rss_kib"]+="$base_rss "
  VALS["$name srv_run"]+="$run_srv "
  VALS["$name load_run"]+="$run_load "
  VALS["$name other"]+="$run_other "
  local notes
  notes=$(log_notes "$name" "$SERVER_LOG")
  if [[ -n $notes ]]; then
    NOTES[$name]+="round $round: $(wc -l <<<"$notes") line(s), first: $(head -n 3 <<<"$notes" | cut -c1-300 | tr '\n' '|')"$'\n'
    log "  $name's log: $(head -n 3 <<<"$notes" | cut -c1-300)"
  fi
  [[ $ok == ok ]] || { FAILED=1; FAILS[$name]=$(( ${FAILS[$name]:-0} + 1 )); }
  log "round $round/$ROUNDS, $name: ${summary}server cpu ${run_srv}% over the run, client ${run_load}%, other ${run_other}%, $ok"
}

# ------------------------------------------------------------ summary ----
report() {
  local s ph med mn mx chk rss first
  local -a vals
  echo
  echo "== topic fan-out: $FANOUT_SUBS subscribers x ${FANOUT_SIZE}-byte text messages, rounds $ROUNDS (order rotating, round 1: ${SHOWN[*]}), a fresh server per run"
  echo "   phases of ${FANOUT_SECS}s after ${FANOUT_WARMUP_SECS}s warm-up: latency = 1 message in flight, throughput = $FANOUT_WINDOW in flight; client busy-poll: $([[ $FANOUT_BUSY_POLL == 1 ]] && echo on || echo off)"
  echo "   servers on cpu $SERVER_CPU (one process, one loop), bench/fanout.c on cpu $LOAD_CPU"
  [[ " ${SHOWN[*]} " == *" wsgate "* ]] && echo "   wsgate:     $WSGATE_SRC_BIN (modified $WSGATE_BUILT; 1 worker; Websocket.publish from pub.lua)"
  [[ " ${SHOWN[*]} " == *" node-ws "* ]] && echo "   node-ws:    node $("$NODE" --version) + ws $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$NODE_MODULES/ws/package.json" | head -n 1) (Debian node-ws), wss.clients.forEach broadcast"
  [[ " ${SHOWN[*]} " == *" websockets "* ]] && echo "   websockets: $("$VENV/bin/python" -c 'import sys, websockets; print("Python", sys.version.split()[0], "+ websockets", websockets.__version__)') (asyncio server, broadcast())"
  echo "   deliveries/s = subscriber receipts in the window / ${FANOUT_SECS}s; last = publish -> the last subscriber's receipt; each = publish -> every receipt"
  printf '%-10s %-10s %12s %-19s %9s %9s %9s %9s %9s %8s %9s %8s %8s %-7s %s | %s\n' server phase "deliveries/s" "min-max" "msgs/s" \
    "last p50" "last p99" "first p50" "each p50" "srv cpu%" "load cpu%" "busy%" "RSS MiB" check "deliveries/s per round" "other% per round"
  printf '%-10s %-10s %12s %-19s %9s %9s %9s %9s %9s\n' "" "" "(median)" "" "" "ms" "ms" "ms" "ms"
  for s in "${SHOWN[@]}"; do
    first=1
    chk=ok; [[ -n ${FAILS[$s]:-} ]] && chk="FAIL(${FAILS[$s]})"
    rss=$(median_of "$s rss_kib")
    for ph in "${PHASES[@]}"; do
      read -ra vals <<<"${VALS["$s $ph deliveries_per_s"]}"
      read -r med mn mx < <(stats "${vals[@]}")
      printf '%-10s %-10s %12s %-19s %9s %9s %9s %9s %9s %8s %9s %8s %8s %-7s %s | %s\n' "$s" "$ph" "$(fmt '%.0f' "$med")" \
        "$(fmt '%.0f' "$mn")-$(fmt '%.0f' "$mx")" "$(fmt '%.1f' "$(median_of "$s $ph msgs_per_s")")" \
        "$(fmt '%.2f' "$(us_to_ms "$(median_of "$s $ph last_p50_us")")")" \
        "$(fmt '%.2f' "$(us_to_ms "$(median_of "$s $ph last_p99_us")")")" \
        "$(fmt '%.2f' "$(us_to_ms "$(median_of "$s $ph first_p50_us")")")" \
        "$(fmt '%.2f' "$(us_to_ms "$(median_of "$s $ph each_p50_us")")")" \
        "$(fmt '%.0f' "$(median_of "$s $ph server_cpu_pct")")" "$(fmt '%.0f' "$(median_of "$s $ph cpu_pct")")" \
        "$(fmt '%.0f' "$(median_of "$s $ph busy_pct")")" \
        "$( (( first )) && fmt '%.1f' "$(awk -v x="$rss" 'BEGIN { if (x == "null") print "null"; else print x / 1024 }')")" \
        "$chk" "${vals[*]}" "$( (( first )) && echo "${VALS["$s other"]% }")"
      first=0
    done
  done

  # Ratios of medians, wsgate over each peer.
  local peer rj="" tp lat p50
  if [[ " ${SHOWN[*]} " == *" wsgate "* ]]; then
    for peer in "${SHOWN[@]}"; do
      [[ $peer == wsgate ]] && continue
      tp=$(ratio "$(median_of "wsgate throughput deliveries_per_s")" "$(median_of "$peer throughput deliveries_per_s")")
      lat=$(ratio "$(median_of "wsgate latency deliveries_per_s")" "$(median_of "$peer latency deliveries_per_s")")
      p50=$(ratio "$(median_of "wsgate latency last_p50_us")" "$(median_of "$peer latency last_p50_us")")
      printf '   ratio of medians wsgate/%s: deliveries/s throughput %s, latency phase %s; latency phase publish->last p50 %s (below 1 favours wsgate)\n' \
        "$peer" "$tp" "$lat" "$p50"
      rj+="${rj:+,}\"wsgate_vs_$peer\":{\"throughput_deliveries_per_s\":$tp,\"latency_deliveries_per_s\":$lat,\"latency_last_p50_us\":$p50}"
    done
  fi
  local noisy total
  read -r noisy total < <(for s in "${SHOWN[@]}"; do echo "${VALS["$s other"]}"; done | count_noisy)
  noisy_warning "$noisy" "$total"
  for s in "${SHOWN[@]}"; do
    [[ -n ${NOTES[$s]:-} ]] || continue
    echo "   $s's log ($([[ $s == wsgate ]] && echo "WARN/ERROR lines" || echo "beyond its banner")):"
    while IFS= read -r line; do [[ -n $line ]] && echo "     $line"; done <<<"${NOTES[$s]}"
  done

  # One JSON line.
  local sj="" pj mj m
  for s in "${SHOWN[@]}"; do
    pj=""
    for ph in "${PHASES[@]}"; do
      mj=""
      for m in "${PHASE_METRICS[@]}"; do
        read -ra vals <<<"${VALS["$s $ph $m"]}"
        read -r med mn mx < <(stats "${vals[@]}")
        mj+="${mj:+,}\"$m\":{\"median\":$med,\"min\":$mn,\"max\":$mx,\"values\":$(json_list "${vals[@]}")}"
      done
      pj+="${pj:+,}\"$ph\":{$mj}"
    done
    local -a rv bv ov sv lv
    read -ra rv <<<"${VALS["$s rss_kib"]}"; read -ra bv <<<"${VALS["$s base_rss_kib"]}"
    read -ra ov <<<"${VALS["$s other"]}"; read -ra sv <<<"${VALS["$s srv_run"]}"; read -ra lv <<<"${VALS["$s load_run"]}"
    sj+="${sj:+,}\"$s\":{$pj,\"rss_kib\":{\"median\":$(median_of "$s rss_kib"),\"values\":$(json_list "${rv[@]}")},\"rss_before_kib\":$(json_list "${bv[@]}"),\"server_cpu_pct_run\":$(json_list "${sv[@]}"),\"load_cpu_pct_run\":$(json_list "${lv[@]}"),\"other_cpu_pct\":$(json_list "${ov[@]}"),\"failed_runs\":${FAILS[$s]:-0}}"
  done
  echo
  echo "{\"bench\":\"fanout\",\"rounds\":$ROUNDS,\"subs\":$FANOUT_SUBS,\"size\":$FANOUT_SIZE,\"secs\":$FANOUT_SECS,\"window\":$FANOUT_WINDOW,\"warmup_secs\":$FANOUT_WARMUP_SECS,\"busy_poll\":$([[ $FANOUT_BUSY_POLL == 1 ]] && echo true || echo false),\"servers\":{$sj},\"ratios\":{$rj},\"noisy_runs\":$noisy}"
}

# ---------------------------------------------------------------- main ----
prereq_args=()
[[ " ${SHOWN[*]} " == *" node-ws "* ]] && prereq_args+=("$NODE:nodejs")
# shellcheck disable=SC2119  # nothing beyond node for the servers named
check_prereqs "${prereq_args[@]}"
peer_prereqs
build_c_tool "$BENCH_DIR/fanout.c" "$FANOUT"
LOADGEN=$FANOUT
# FANOUT_SUBS + 1 sockets in the client and as many in the server.
need_nofile $(( FANOUT_SUBS + 256 )) "FANOUT_SUBS=$FANOUT_SUBS (need $(( FANOUT_SUBS + 256 )))"

if [[ " ${SHOWN[*]} " == *" wsgate "* ]]; then
  copy_wsgate_bin
  mkdir -p "$TMP_ROOT/endpoints"
  cat >"$TMP_ROOT/endpoints/sub.lua" <<'EOF'
-- bench/fanout.sh: every socket of /sub listens to the topic "bench".
if websocketInfo.type == "open" then
  Websocket.subscribe{socket_id = websocketInfo.socket_id, topic = "bench"}
end
EOF
  cat >"$TMP_ROOT/endpoints/pub.lua" <<'EOF'
-- bench/fanout.sh: every message on /pub is published to the topic "bench".
if websocketInfo.type == "data" then
  Websocket.publish{topic = "bench", message = websocketInfo.message}
end
EOF
  WSGATE_ENDPOINTS=$TMP_ROOT/endpoints
  WSGATE_CONFIG="{\"rateLimit\": {\"messagesPerSecond\": 0}, \"limits\": {\"maxConnections\": $(( FANOUT_SUBS + 1000 ))}}"
fi

for (( round = 1; round <= ROUNDS; round++ )); do
  order=$(round_order "$round")
  log "== round $round/$ROUNDS: $order"
  for s in $order; do fanout_run "$round" "$s"; done
done

report
if [[ $FAILED != 0 ]]; then
  log "some runs reported errors, failed connections or missing deliveries (see warnings above)"
  exit 1
fi
