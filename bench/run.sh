#!/usr/bin/env bash
# Benchmark harness: wsgate vs nginx + lua-nginx-websocket.
#
# Usage: bench/run.sh [wsgate|nginx|all]        (default: all)
#
# For each server:
#   * start it pinned to CPU 0 on a free port of 127.0.0.1 (temp dir for
#     config, logs, pid file; nothing is written inside the repository);
#   * echo throughput: wsload -m echo, pinned to CPU 1, 100 connections,
#     64-byte text messages, once with 1 and once with 16 messages in flight
#     per connection (after a short unreported warm-up);
#   * idle memory: RSS before and while holding 10,000 idle WebSockets
#     (spread over 4 source addresses 127.0.0.2-5), per-connection delta;
#   * churn: wsload -m churn keeps CHURN_INFLIGHT (50) cycles in flight for
#     CHURN_SECS (10) s; one cycle = TCP connect, upgrade, client close
#     frame, the server's close frame, close(). Reports cycles/s and the
#     server's CPU time per cycle (measured after the idle test, so that
#     the idle baseline is the same warmed-up server as before);
#   * stop the server.
# Prints a table per server and, at the end, one JSON line per server.
# Exit status is non-zero if any load-generator run reported errors,
# failed connections or wrong echoes. This is one pass per server; for
# figures quoted as wsgate/nginx ratios (fresh servers, alternating order,
# medians of several rounds) use bench/compare.sh.
#
# Tunables (environment): WSLOAD (where the load generator is built, default
# /tmp/wsgate-bench-wsload), WSGATE_BIN, WSGATE_HOST, ECHO_SECS, ECHO_CONNS,
# ECHO_SIZE, ECHO_DEPTHS, WARMUP_SECS, IDLE_CONNS, IDLE_SRCS, IDLE_HOLD_SECS,
# CHURN_SECS, CHURN_INFLIGHT, SERVER_CPU, LOAD_CPU, QUIET_WAIT_SECS,
# QUIET_BUSY_PCT, KEEP_TMP=1 (keep logs).
#
# The load generator is the project's own, bench/wsload.c, built on first use
# and whenever the source is newer (bench/lib.sh, build_loadgen); missing
# Debian packages (nginx and its Lua modules, a C compiler, libssl-dev, ...)
# are installed with apt-get when run as root (check_prereqs). The helpers
# and the echo and idle measurements live in bench/lib.sh, shared with the
# wss:// harness bench/run-tls.sh.
#
# The machine should otherwise be idle: before each echo run the script waits
# (up to QUIET_WAIT_SECS) for total CPU use to drop below QUIET_BUSY_PCT, and
# the "other%" column shows CPU used during the run by unrelated processes
# (neither the server, nor this script and wsload, nor kernel threads); large
# "other%" values mean noisy throughput numbers. The idle-memory baseline is
# read after the echo runs, i.e. from a warmed-up server.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

CHURN_SECS=${CHURN_SECS:-10}
CHURN_INFLIGHT=${CHURN_INFLIGHT:-50}

parse_servers "$@"

declare -a JSON_LINES=()
bench_init

# ------------------------------------------------------- measurements ----
# Connection churn against URL, results in DIR. Sets CHURN_ROW (a table row)
# and CHURN_JSON (a JSON fragment). Server CPU per cycle is the whole run's
# (the drain after the window included) over every completed cycle: with
# both processes on one core each, whichever saturates first sets the rate,
# and "cycles/s @core" = 1e6 / (server us per cycle) is what one fully busy
# server core would do.
churn_header() {
  printf '  %-22s %12s %9s %9s %9s %9s %9s %9s %9s %7s %s\n' test "cycles/s" "p50 us" "p99 us" \
    "srv cpu%" "srv us/cy" "cy/s@core" "load cpu%" "other%" errors check
}
measure_churn() {
  local url=$1 dir=$2 res ok=ok rate total errs cfail us core
  log "$SERVER_NAME: churn -c $CHURN_INFLIGHT -d $CHURN_SECS"
  measured_run "$dir/churn.json" -m churn -c "$CHURN_INFLIGHT" -d "$CHURN_SECS" -S "$IDLE_SRCS" "$url"
  res=$RUN_RES
  log "  $res"
  rate=$(jnum handshakes_per_s "$res"); total=$(jnum cycles_total "$res")
  errs=$(jnum errors "$res"); cfail=$(jnum connect_fail "$res")
  if [[ -z $rate || -z $total || $total == 0 || $errs != 0 || $cfail != 0 ]]; then
    log "WARNING: $SERVER_NAME churn: cycles=$total errors=$errs connect_fail=$cfail"
    ok=FAIL; FAILED=1
  fi
  us=$(awk -v t="$RUN_SRV_TICKS" -v hz="$CLK_TCK" -v n="${total:-0}" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "null" }')
  core=$(awk -v u="$us" 'BEGIN { if (u + 0 > 0) printf "%d", 1e6 / u + 0.5; else print "null" }')
  CHURN_ROW=$(printf '  %-22s %12s %9s %9s %9s %9s %9s %9s %9s %7s %s' "churn -c $CHURN_INFLIGHT" \
    "$rate" "$(jnum p50_us "$res")" "$(jnum p99_us "$res")" "$RUN_SRV_PCT" "$us" "$core" \
    "$RUN_LOAD_PCT" "$RUN_OTHER_PCT" "$errs" "$ok")$'\n'
  CHURN_JSON="\"churn_per_s\":$(jval handshakes_per_s "$res"),\"churn_inflight\":$CHURN_INFLIGHT,\"churn_secs\":$CHURN_SECS,\"churn_server_us\":$us,\"churn_server_cpu_pct\":$RUN_SRV_PCT,\"churn_load_cpu_pct\":$RUN_LOAD_PCT,\"churn_other_cpu_pct\":$RUN_OTHER_PCT"
}

# ------------------------------------------------------------- one run ----
bench_server() {
  local name=$1 dir port url
  dir="$TMP_ROOT/$name"; mkdir -p "$dir"; chmod 755 "$dir"
  port=$(free_port)
  url="ws://127.0.0.1:$port/echo"

  start_server "$name" "$dir" "$port"
  local kids rss_start
  kids=$(descendants "$SERVER_PID")
  # shellcheck disable=SC2086
  rss_start=$(sum_rss "$SERVER_PID" $kids)

  # ---- (a) echo throughput
  echo_warmup "$url" "$dir"
  measure_echo "$url" "$dir"

  # ---- (b) idle-connection memory (baseline from the warmed-up server)
  measure_idle "$url" "$dir" plain

  # ---- (c) connection churn
  measure_churn "$url" "$dir"

  stop_server

  # ---- report
  local has_kids=0; [[ $name == nginx ]] && has_kids=1
  {
    echo
    echo "== $name  (server cpu $SERVER_CPU, load cpu $LOAD_CPU, $ECHO_CONNS conns x $ECHO_SIZE B, ${ECHO_SECS}s)"
    echo_header
    printf '%s' "$ECHO_ROWS"
    printf '  %-22s %12s %12s %14s %s\n' "memory (RSS)" "base KiB" "10k idle KiB" "B per idle conn" check
    local label="total"; [[ $has_kids == 1 ]] && label="master+worker"
    printf '  %-22s %12s %12s %14s %s\n' "$label" "$IDLE_BASE_TOTAL" "$IDLE_TOTAL" "$IDLE_PER_CONN" "$IDLE_OK"
    [[ $has_kids == 1 ]] && printf '  %-22s %12s %12s %14s\n' "worker only" "$IDLE_BASE_MAIN" "$IDLE_MAIN" "$IDLE_PER_CONN_MAIN"
    printf '  %-22s %12s\n' "rss right after start" "$rss_start"
    printf '  idle connections open: %s (READY %s), connect time %ss\n' "$IDLE_OPEN" "$IDLE_READY" "$(jnum connect_s "$IDLE_RES")"
    echo "  churn: $CHURN_INFLIGHT in flight, ${CHURN_SECS}s; cycle = TCP connect + upgrade + close handshake + close"
    churn_header
    printf '%s' "$CHURN_ROW"
  }

  local extra=""
  [[ $has_kids == 1 ]] && extra=",\"worker_rss_base_kib\":$IDLE_BASE_MAIN,\"worker_rss_10k_kib\":$IDLE_MAIN,\"worker_bytes_per_idle_conn\":$IDLE_PER_CONN_MAIN"
  JSON_LINES+=("{\"server\":\"$name\",\"echo_msgs_per_s\":{$ECHO_JSON},\"echo_conns\":$ECHO_CONNS,\"echo_size\":$ECHO_SIZE,\"echo_secs\":$ECHO_SECS,\"echo_server_cpu_pct\":{$ECHO_CPU_JSON},\"echo_other_cpu_pct\":{$ECHO_OTHER_JSON},\"rss_start_kib\":$rss_start,\"rss_base_kib\":$IDLE_BASE_TOTAL,\"rss_10k_kib\":$IDLE_TOTAL,\"bytes_per_idle_conn\":$IDLE_PER_CONN,\"idle_open\":$IDLE_OPEN,$CHURN_JSON$extra}")
}

# ---------------------------------------------------------------- main ----
# shellcheck disable=SC2119  # over ws:// no tool beyond the common ones
check_prereqs
build_loadgen

raise_nofile

bench_all
