#!/usr/bin/env bash
# Memory that follows the live work: does a server's resident memory grow
# with connection churn, and does it come back once the churn stops?
#
# Usage: bench/churn-memory.sh [SERVER...]
#   servers: wsgate (WSGATE_BIN), wsgate-base (WSGATE_BASE_BIN, a second
#   wsgate binary for before/after), nginx (reference); default: wsgate,
#   wsgate-base when WSGATE_BASE_BIN is set, nginx.
#
# For each server, one after the other, pinned to SERVER_CPU (0) with the
# load generator on LOAD_CPU (1), after waiting for a quiet machine:
#   * start it fresh (start_server in bench/lib.sh), wait FRESH_SECS (2) s
#     and read its RSS: "fresh";
#   * wsload -m churn -c CHURN_INFLIGHT (50) for CHURN_SECS (30) s (one
#     cycle = TCP connect, upgrade, close handshake, close), reading the RSS
#     every SAMPLE_SECS (0.5) s while the load generator runs (its drain of
#     the cycles in flight included): "during (max)" and "during (last)";
#   * once the load generator has exited, read the RSS at +1 s, +5 s and
#     +10 s;
#   * stop the server.
# RSS is that of the whole process tree (nginx: master + worker). The table
# gives the readings in MB (10^6 bytes), "during (max)" and "10 s after" as
# MB above fresh, and the cycles done (cycles_total: every completed cycle)
# and the rate inside the window; then one JSON line per server (KiB).
# Exit status is non-zero if a churn run reported errors or failed
# connections.
#
# Tunables (environment): CHURN_SECS, CHURN_INFLIGHT, FRESH_SECS,
# SAMPLE_SECS, IDLE_SRCS (source addresses the churn is spread over),
# WSGATE_BIN, WSGATE_BASE_BIN, WSGATE_HOST, WSLOAD, SERVER_CPU, LOAD_CPU,
# QUIET_WAIT_SECS, QUIET_BUSY_PCT, KEEP_TMP=1 (keep logs).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

CHURN_SECS=${CHURN_SECS:-30}
CHURN_INFLIGHT=${CHURN_INFLIGHT:-50}
FRESH_SECS=${FRESH_SECS:-2}
SAMPLE_SECS=${SAMPLE_SECS:-0.5}
WSGATE_BASE_BIN=${WSGATE_BASE_BIN:-}
AFTER_SECS=(1 5 10)

usage() { echo "usage: $0 [wsgate|wsgate-base|nginx ...]" >&2; exit 2; }

declare -a SHOWN=()
for arg in "$@"; do
  case "$arg" in
    wsgate|nginx) ;;
    wsgate-base) [[ -n $WSGATE_BASE_BIN ]] || die "wsgate-base needs WSGATE_BASE_BIN=/path/to/wsgate" ;;
    *) usage ;;
  esac
  [[ " ${SHOWN[*]} " == *" $arg "* ]] || SHOWN+=("$arg")
done
if (( ${#SHOWN[@]} == 0 )); then
  SHOWN=(wsgate)
  [[ -n $WSGATE_BASE_BIN ]] && SHOWN+=(wsgate-base)
  SHOWN+=(nginx)
fi

# The temp dir becomes the working directory: binaries named relatively must
# be resolved first.
[[ -e $WSGATE_BIN ]] && WSGATE_BIN=$(readlink -f "$WSGATE_BIN")
if [[ -n $WSGATE_BASE_BIN ]]; then
  [[ -x $WSGATE_BASE_BIN ]] || die "WSGATE_BASE_BIN is not an executable: $WSGATE_BASE_BIN"
  WSGATE_BASE_BIN=$(readlink -f "$WSGATE_BASE_BIN")
fi

# check_prereqs knows wsgate and nginx; wsgate-base was checked above.
SERVERS=()
for s in "${SHOWN[@]}"; do
  [[ $s == wsgate-base ]] || SERVERS+=("$s")
done

declare -a JSON_LINES=() ROWS=()
bench_init

# wsgate-base is started exactly like wsgate (start_server calls start_$name).
start_wsgate-base() {
  local WSGATE_BIN=$WSGATE_BASE_BIN
  start_wsgate "$@"
}

# RSS (KiB) of the server and its descendants.
tree_rss() {
  # shellcheck disable=SC2046
  sum_rss "$SERVER_PID" $(descendants "$SERVER_PID")
}

# Sleep until $1 + $2 seconds (date +%s.%N), if that is still ahead.
sleep_until() {
  local d
  d=$(awk -v t0="$1" -v s="$2" -v now="$(date +%s.%N)" 'BEGIN { d = t0 + s - now; printf "%.3f", (d > 0 ? d : 0) }')
  sleep "$d"
}

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }'; }
mb_above() { awk -v k="$1" -v f="$2" 'BEGIN { printf "%+.1f", (k - f) * 1024 / 1e6 }'; }

churn_memory() {
  local name=$1 dir port url fresh rss max=0 last=0 samples=0 t_stop res ok=ok a
  local -a after=()
  dir=$TMP_ROOT/$name; mkdir -p "$dir"; chmod 755 "$dir"
  port=$(free_port)
  url="ws://127.0.0.1:$port/echo"

  wait_quiet
  start_server "$name" "$dir" "$port"
  sleep "$FRESH_SECS"
  fresh=$(tree_rss)
  log "$name: fresh RSS $fresh KiB; churn -c $CHURN_INFLIGHT -d $CHURN_SECS"

  local out=$dir/churn.out
  start_load "$out" -m churn -c "$CHURN_INFLIGHT" -d "$CHURN_SECS" -S "$IDLE_SRCS" "$url"
  while alive "$LOAD_PID"; do
    alive "$SERVER_PID" || die "$name died during the churn"
    rss=$(tree_rss)
    (( rss > max )) && max=$rss
    last=$rss
    samples=$(( samples + 1 ))
    sleep "$SAMPLE_SECS"
  done
  wait_load "$out"
  t_stop=$(date +%s.%N)
  res=$(grep '^{' "$out" | tail -n 1 || true)
  log "  $res"

  for a in "${AFTER_SECS[@]}"; do
    sleep_until "$t_stop" "$a"
    alive "$SERVER_PID" || die "$name died after the churn"
    after+=("$(tree_rss)")
  done
  log "$name: during max $max KiB, last $last KiB ($samples samples); after +${AFTER_SECS[*]} s: ${after[*]} KiB"
  stop_server

  local rate total errs cfail
  rate=$(jnum handshakes_per_s "$res"); total=$(jnum cycles_total "$res")
  errs=$(jnum errors "$res"); cfail=$(jnum connect_fail "$res")
  if [[ -z $rate || -z $total || $total == 0 || $errs != 0 || $cfail != 0 ]]; then
    log "WARNING: $name churn: cycles=$total errors=$errs connect_fail=$cfail"
    ok=FAIL; FAILED=1
  fi

  local who=total; [[ $name == nginx ]] && who=master+worker
  ROWS+=("$(printf '  %-12s %-14s %8s %9s %9s %8s %8s %8s %14s %13s %10s %9s %7s %s' "$name" "$who" \
    "$(mb "$fresh")" "$(mb "$max")" "$(mb "$last")" "$(mb "${after[0]}")" "$(mb "${after[1]}")" \
    "$(mb "${after[2]}")" "$(mb_above "$max" "$fresh")" "$(mb_above "${after[2]}" "$fresh")" \
    "${total:-?}" "${rate:-?}" "${errs:-?}" "$ok")")
  JSON_LINES+=("{\"server\":\"$name\",\"churn_inflight\":$CHURN_INFLIGHT,\"churn_secs\":$CHURN_SECS,\"rss_fresh_kib\":$fresh,\"rss_during_max_kib\":$max,\"rss_during_last_kib\":$last,\"samples\":$samples,\"rss_after_1s_kib\":${after[0]},\"rss_after_5s_kib\":${after[1]},\"rss_after_10s_kib\":${after[2]},\"during_max_above_fresh_kib\":$(( max - fresh )),\"after_10s_above_fresh_kib\":$(( after[2] - fresh )),\"cycles_total\":$(jval cycles_total "$res"),\"cycles_per_s\":$(jval handshakes_per_s "$res"),\"errors\":$(jval errors "$res"),\"connect_fail\":$(jval connect_fail "$res")}")
}

# ---------------------------------------------------------------- main ----
# shellcheck disable=SC2119  # over ws:// no tool beyond the common ones
check_prereqs
build_loadgen
raise_nofile

for s in "${SHOWN[@]}"; do churn_memory "$s"; done

echo
echo "== RSS under connection churn: $CHURN_INFLIGHT cycles in flight for ${CHURN_SECS}s (server cpu $SERVER_CPU, load cpu $LOAD_CPU); MB = 10^6 B"
echo "   wsgate:      $WSGATE_BIN"
[[ -n $WSGATE_BASE_BIN ]] && echo "   wsgate-base: $WSGATE_BASE_BIN"
printf '  %-12s %-14s %8s %9s %9s %8s %8s %8s %14s %13s %10s %9s %7s %s\n' server process "fresh" "during" "during" \
  "+1 s" "+5 s" "+10 s" "during (max)" "10 s after" cycles "cycles/s" errors check
printf '  %-12s %-14s %8s %9s %9s %8s %8s %8s %14s %13s %10s %9s %7s %s\n' "" "" "MB" "max MB" "last MB" \
  "MB" "MB" "MB" "above fresh" "above fresh" "" "" "" ""
printf '%s\n' "${ROWS[@]}"
echo
printf '%s\n' "${JSON_LINES[@]}"
if [[ $FAILED != 0 ]]; then
  log "some runs reported errors (see warnings above)"
  exit 1
fi
