#!/usr/bin/env bash
# How fast can a backend push to one socket? The management API's
# `POST /@connections/{id}` against an HTTP endpoint script that does the
# same with Websocket.send, in alternating rounds of one run.
#
# Usage: bench/push.sh        (no arguments; tunables below)
#
# Set-up (one server for the whole run): wsgate, 1 worker, pinned to
# SERVER_CPU (0) on a free port of 127.0.0.1, with the rate limit off, the
# management API on a second free port with a random token, and an
# endpoints folder (in the temp dir) holding
#   sink.lua          on "open" sends the socket its own id, nothing else;
#   push/{id}.http.lua
#       local f = Websocket.send{socket_id = request.parameters.id, message = request.body}
#       response.code = f and f.status or 204
# One WebSocket to /sink is held by bench/wssink.c (pinned to LOAD_CPU, 1),
# which prints that first message (the socket id) and then reads and counts
# every message as fast as it comes.
#
# Targets, each a run of bench/httpload.c (pinned to LOAD_CPU, 1):
# PUSH_CONNS (8) keep-alive connections in closed loops, a PUSH_SIZE (64)
# byte text body, PUSH_WARMUP_SECS (2) s of unreported warm-up, then
# PUSH_SECS (10) s measured:
#   admin    POST /@connections/{id} on the admin port (Authorization:
#            Bearer <token>), answered by the gateway itself
#   script   POST /push/{id} on the main port, answered by the script above
# PUSH_ROUNDS (3) rounds; admin first on odd rounds, script first on even
# ones; the machine must be quiet before each run (wait_quiet). Every run
# starts with fresh counts: the sink's count is read (SIGUSR1) before and
# after it, after waiting (up to DELIVERY_WAIT_SECS, 10) for the messages
# of every 204 the run got (warm-up and drain included) to arrive.
#
# Reported per target: the median of the runs' requests/s (min-max and the
# per-round values), median p50/p99 latency (request sent -> response
# read), the answers' statuses over all rounds (all 204 when the sink keeps
# up; 429 means the socket's send queue was past half full: the reader is
# too slow, and is reported as such), the messages the sink received and
# how many 204s have no message ("missing"), and per run the server's CPU
# (% of one core) and "other%" (CPU of unrelated processes, see foreign_pct
# in bench/lib.sh; the sink is left out of it). Then the ratio of the
# medians script/admin, a table, and one JSON line at the end. Runs whose
# other% exceeds NOISY_PCT (10) are counted in a warning under the table
# ("noisy_runs" in the JSON). Exit status is non-zero if a run had
# connection errors, an answer other than 204, or missing messages.
#
# Tunables (environment): PUSH_SECS, PUSH_ROUNDS, PUSH_CONNS, PUSH_SIZE,
# PUSH_WARMUP_SECS, DELIVERY_WAIT_SECS, NOISY_PCT, HTTPLOAD (where
# bench/httpload.c is built, default /tmp/wsgate-bench-httpload), WSSINK
# (bench/wssink.c, default /tmp/wsgate-bench-wssink), WSGATE_BIN,
# WSGATE_HOST, SERVER_CPU, LOAD_CPU, QUIET_WAIT_SECS, QUIET_BUSY_PCT,
# KEEP_TMP=1 (keep logs).
# Example, a short try:
#   PUSH_SECS=3 PUSH_ROUNDS=1 bench/push.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

PUSH_SECS=${PUSH_SECS:-10}
PUSH_ROUNDS=${PUSH_ROUNDS:-3}
PUSH_CONNS=${PUSH_CONNS:-8}
PUSH_SIZE=${PUSH_SIZE:-64}
PUSH_WARMUP_SECS=${PUSH_WARMUP_SECS:-$WARMUP_SECS}
DELIVERY_WAIT_SECS=${DELIVERY_WAIT_SECS:-10}
NOISY_PCT=${NOISY_PCT:-10}     # other% above this marks a run as noisy in the summary
HTTPLOAD=${HTTPLOAD:-/tmp/wsgate-bench-httpload}
WSSINK=${WSSINK:-/tmp/wsgate-bench-wssink}
TARGETS=(admin script)

(( $# == 0 )) || { echo "usage: $0   (no arguments; see the header comment for the tunables)" >&2; exit 2; }
need_positive PUSH_SECS PUSH_ROUNDS PUSH_CONNS PUSH_SIZE
need_nonnegative PUSH_WARMUP_SECS

# The temp dir becomes the working directory: a binary named relatively must
# be resolved first.
[[ -e $WSGATE_BIN ]] && WSGATE_BIN=$(readlink -f "$WSGATE_BIN")

SERVERS=(wsgate)
bench_init

SINK_PID=""
SINK_OUT=""
# lib.sh's cleanup stops the load generator and the server; the sink is ours.
push_cleanup() {
  local rc=$?
  set +e
  if [[ -n $SINK_PID ]]; then stop_pid "$SINK_PID" wssink; SINK_PID=""; fi
  (exit "$rc")
  cleanup
}
trap push_cleanup EXIT

# ------------------------------------------------------------- helpers ----
# (stats, ratio and json_list are lib.sh's.)
# The inside of a flat JSON object field: jobj statuses_total '{"statuses_total":{"204":5}}' -> "204":5
jobj() { sed -n "s/.*\"$1\":{\\([^}]*\\)}.*/\\1/p" <<<"$2"; }

# The sink's message count now.
sink_count() {
  local rc=0
  read_sink_count "$SINK_PID" "$SINK_OUT" || rc=$?
  (( rc != 1 )) || die "the sink (pid $SINK_PID) is gone: $(cat "$SINK_OUT.err")"
  (( rc != 2 )) || die "the sink did not answer SIGUSR1: $(cat "$SINK_OUT.err")"
}

# Wait until the sink's count reaches $1 + $2 (its count before the run plus
# the run's 204s), up to DELIVERY_WAIT_SECS; prints the messages received.
await_delivery() {
  local base=$1 expected=$2 cur last=-1 still=0 deadline
  deadline=$(( SECONDS + DELIVERY_WAIT_SECS ))
  while :; do
    cur=$(sink_count)
    (( cur - base >= expected )) && break
    (( SECONDS >= deadline )) && break
    if (( cur == last )); then still=$(( still + 1 )); else still=0; fi
    # no progress for 3 s: nothing more is on its way
    (( still >= 30 )) && break
    last=$cur
    sleep 0.1
  done
  echo $(( cur - base ))
}

# Results, keyed by target: space-separated, one entry per round.
declare -A RPS=() P50=() P99=() CPUS=() OTHERS=() SINK=() N204=() MISSING=() ERRS=() STATUS=() FAILS=()

# One measured run of target $2 in round $1.
push_run() {
  local round=$1 target=$2 dir res url before got n204 st errs missing ok=ok
  dir=$TMP_ROOT/r$round-$target
  local -a args=(-c "$PUSH_CONNS" -d "$PUSH_SECS" -w "$PUSH_WARMUP_SECS" -m POST -b "$BODY")
  case "$target" in
    admin) url="http://127.0.0.1:$ADMIN_PORT/@connections/$SOCKET_ID"; args+=(-H "Authorization: Bearer $TOKEN") ;;
    script) url="http://127.0.0.1:$PORT/push/$SOCKET_ID" ;;
  esac
  mkdir -p "$dir"
  before=$(sink_count)
  log "round $round/$PUSH_ROUNDS, $target: httpload -c $PUSH_CONNS -w $PUSH_WARMUP_SECS -d $PUSH_SECS POST $url"
  measured_run "$dir/run.json" "${args[@]}" "$url"
  res=$RUN_RES
  log "  $res"
  [[ -n $res ]] || die "httpload printed no result: $(cat "$TMP_ROOT/load.out.err" 2>/dev/null)"
  st=$(jobj statuses_total "$res")
  n204=$(sed -n 's/.*"204":\([0-9]*\).*/\1/p' <<<"$st"); n204=${n204:-0}
  got=$(await_delivery "$before" "$n204")
  missing=$(( n204 - got ))
  errs=$(jnum errors "$res")
  if [[ -z $errs || $errs != 0 ]]; then
    log "WARNING: $target round $round: $errs connection errors"; ok=FAIL
  fi
  if [[ -n $(tr ',' '\n' <<<"$st" | grep -v '^"204":' || true) ]]; then
    log "WARNING: $target round $round: answers other than 204: {$st}"
    [[ $st == *'"429":'* ]] && log "  429: the socket's send queue was past half full, i.e. the sink did not keep up"
    ok=FAIL
  fi
  if (( missing != 0 )); then
    log "WARNING: $target round $round: $n204 answers 204 but the sink got $got messages"; ok=FAIL
  fi
  [[ $ok == ok ]] || { FAILED=1; FAILS[$target]=$(( ${FAILS[$target]:-0} + 1 )); }
  local kv code cnt
  for kv in $(tr ',' ' ' <<<"$st"); do
    code=${kv%%:*}; code=${code//\"/}; cnt=${kv#*:}
    STATUS["$target $code"]=$(( ${STATUS["$target $code"]:-0} + cnt ))
  done
  RPS[$target]+="$(jval requests_per_s "$res") "
  P50[$target]+="$(jval p50_us "$res") "
  P99[$target]+="$(jval p99_us "$res") "
  CPUS[$target]+="$RUN_SRV_PCT "
  OTHERS[$target]+="$RUN_OTHER_PCT "
  SINK[$target]=$(( ${SINK[$target]:-0} + got ))
  N204[$target]=$(( ${N204[$target]:-0} + n204 ))
  MISSING[$target]=$(( ${MISSING[$target]:-0} + missing ))
  ERRS[$target]=$(( ${ERRS[$target]:-0} + ${errs:-0} ))
  log "round $round/$PUSH_ROUNDS, $target: $(jnum requests_per_s "$res") req/s, statuses {$st}, sink got $got, server cpu ${RUN_SRV_PCT}%, other ${RUN_OTHER_PCT}%, $ok"
}

# Statuses of a target over all rounds, as the inside of a JSON object.
statuses_of() {
  local t=$1 k out=""
  for k in $(printf '%s\n' "${!STATUS[@]}" | sed -n "s/^$t //p" | sort -n); do
    out+="${out:+,}\"$k\":${STATUS["$t $k"]}"
  done
  echo "$out"
}

report() {
  local t med mn mx p50 p99 chk line tj=""
  local -a p
  local -a vals
  local -A median=()
  echo
  echo "== push to one socket: rounds $PUSH_ROUNDS (alternating; odd rounds: ${TARGETS[*]}), $PUSH_CONNS keep-alive connections x ${PUSH_SIZE}-byte bodies, ${PUSH_SECS}s measured after ${PUSH_WARMUP_SECS}s warm-up"
  echo "   wsgate: $WSGATE_BIN (1 worker, cpu $SERVER_CPU); httpload and the sink on cpu $LOAD_CPU"
  echo "   admin  = POST /@connections/{id} (management API); script = POST /push/{id} (push/{id}.http.lua, Websocket.send)"
  printf '%-7s %12s %-17s %8s %8s %-22s %10s %8s %-7s %s | %s | %s\n' target "median req/s" "min-max" "p50 us" "p99 us" \
    "statuses (all rounds)" "sink msgs" missing check "req/s per round" "srv cpu% per round" "other% per round"
  for t in "${TARGETS[@]}"; do
    read -ra vals <<<"${RPS[$t]}"
    read -r med mn mx < <(stats "${vals[@]}")
    median[$t]=$med
    read -ra p <<<"${P50[$t]}"; read -r p50 _ _ < <(stats "${p[@]}")
    read -ra p <<<"${P99[$t]}"; read -r p99 _ _ < <(stats "${p[@]}")
    chk=ok; [[ -n ${FAILS[$t]:-} ]] && chk="FAIL(${FAILS[$t]})"
    printf '%-7s %12.0f %-17s %8.0f %8.0f %-22s %10s %8s %-7s %s | %s | %s\n' "$t" "$med" "$(printf '%.0f-%.0f' "$mn" "$mx")" \
      "$p50" "$p99" "{$(statuses_of "$t")}" "${SINK[$t]}" "${MISSING[$t]}" "$chk" "${vals[*]}" "${CPUS[$t]% }" "${OTHERS[$t]% }"
    local -a cv ov pv qv
    read -ra cv <<<"${CPUS[$t]}"; read -ra ov <<<"${OTHERS[$t]}"
    read -ra pv <<<"${P50[$t]}"; read -ra qv <<<"${P99[$t]}"
    local path='/@connections/{id}'; [[ $t == script ]] && path='/push/{id}'
    tj+="${tj:+,}\"$t\":{\"path\":\"$path\",\"requests_per_s\":{\"median\":$med,\"min\":$mn,\"max\":$mx,\"values\":$(json_list "${vals[@]}")},\"p50_us\":{\"median\":$p50,\"values\":$(json_list "${pv[@]}")},\"p99_us\":{\"median\":$p99,\"values\":$(json_list "${qv[@]}")},\"statuses\":{$(statuses_of "$t")},\"responses_204\":${N204[$t]},\"sink_msgs\":${SINK[$t]},\"missing\":${MISSING[$t]},\"errors\":${ERRS[$t]},\"server_cpu_pct\":$(json_list "${cv[@]}"),\"other_cpu_pct\":$(json_list "${ov[@]}"),\"failed_runs\":${FAILS[$t]:-0}}"
  done
  local r; r=$(ratio "${median[script]}" "${median[admin]}")
  echo "   ratio of medians script/admin: $r"
  local noisy total
  read -r noisy total < <(echo "${OTHERS[admin]} ${OTHERS[script]}" | count_noisy)
  noisy_warning "$noisy" "$total"
  echo
  line="{\"bench\":\"push\",\"rounds\":$PUSH_ROUNDS,\"conns\":$PUSH_CONNS,\"body_bytes\":$PUSH_SIZE,\"secs\":$PUSH_SECS,\"warmup_secs\":$PUSH_WARMUP_SECS,\"targets\":{$tj},\"ratio_script_vs_admin\":$r,\"noisy_runs\":$noisy}"
  echo "$line"
}

# ---------------------------------------------------------------- main ----
# shellcheck disable=SC2119  # no tool beyond the common ones
check_prereqs
build_c_tool "$BENCH_DIR/httpload.c" "$HTTPLOAD"
build_c_tool "$BENCH_DIR/wssink.c" "$WSSINK"
LOADGEN=$HTTPLOAD

# 64 bytes of a..z: valid UTF-8, nothing to escape on a command line.
BODY=$(awk -v n="$PUSH_SIZE" 'BEGIN { for (i = 0; i < n; i++) printf "%c", 97 + i % 26 }')

dir=$TMP_ROOT/wsgate
mkdir -p "$dir/endpoints/push"
cat >"$dir/endpoints/sink.lua" <<'EOF'
-- bench/push.sh: tell the reader its socket id; ignore everything else.
if websocketInfo.type == "open" then websocketInfo.send(websocketInfo.socket_id) end
EOF
cat >"$dir/endpoints/push/{id}.http.lua" <<'EOF'
-- bench/push.sh: POST /push/{id} sends the body to socket {id}.
local f = Websocket.send{socket_id = request.parameters.id, message = request.body}
response.code = f and f.status or 204
EOF
PORT=$(free_port)
ADMIN_PORT=$(free_port)
while [[ $ADMIN_PORT == "$PORT" ]]; do ADMIN_PORT=$(free_port); done
TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
WSGATE_CONFIG="{\"rateLimit\": {\"messagesPerSecond\": 0}, \"admin\": {\"port\": $ADMIN_PORT, \"token\": \"$TOKEN\"}}"
WSGATE_ENDPOINTS=$dir/endpoints
start_server wsgate "$dir" "$PORT"

code=""
for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -H "Authorization: Bearer $TOKEN" \
           "http://127.0.0.1:$ADMIN_PORT/api/v1/solution/health" 2>/dev/null || true)
  [[ $code == 200 ]] && break
  sleep 0.1
done
[[ $code == 200 ]] || die "the management API on port $ADMIN_PORT does not answer (last status: ${code:-none})"

SINK_OUT=$TMP_ROOT/sink.out
log "opening the sink: wssink -i ws://127.0.0.1:$PORT/sink (cpu $LOAD_CPU)"
taskset -c "$LOAD_CPU" "$WSSINK" -i "ws://127.0.0.1:$PORT/sink" >"$SINK_OUT" 2>"$SINK_OUT.err" &
SINK_PID=$!
OTHER_EXCLUDE_PIDS=$SINK_PID
SOCKET_ID=""
for _ in $(seq 1 100); do
  SOCKET_ID=$(sed -n 's/^FIRST 0 //p' "$SINK_OUT")
  [[ -n $SOCKET_ID ]] && break
  alive "$SINK_PID" || die "the sink exited: $(cat "$SINK_OUT" "$SINK_OUT.err")"
  sleep 0.1
done
[[ -n $SOCKET_ID ]] || die "the sink got no socket id: $(cat "$SINK_OUT" "$SINK_OUT.err")"
[[ $SOCKET_ID =~ ^[A-Za-z0-9._~-]+$ ]] || die "unexpected socket id: $SOCKET_ID"
log "sink socket id: $SOCKET_ID"

for (( round = 1; round <= PUSH_ROUNDS; round++ )); do
  if (( round % 2 == 1 )); then order=(admin script); else order=(script admin); fi
  log "== round $round/$PUSH_ROUNDS: ${order[*]}"
  for t in "${order[@]}"; do push_run "$round" "$t"; done
done

alive "$SINK_PID" || die "the sink exited during the run: $(cat "$SINK_OUT.err")"
report
if [[ $FAILED != 0 ]]; then
  log "some runs reported errors, answers other than 204 or missing messages (see warnings above)"
  exit 1
fi
