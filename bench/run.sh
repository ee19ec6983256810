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
#   * stop the server.
# Prints a table per server and, at the end, one JSON line per server.
# Exit status is non-zero if any load-generator run reported errors,
# failed connections or wrong echoes.
#
# Tunables (environment): WSLOAD, WSLOAD_SRC, WSGATE_BIN, WSGATE_HOST, ECHO_SECS,
# ECHO_CONNS, ECHO_SIZE, ECHO_DEPTHS, WARMUP_SECS, IDLE_CONNS, IDLE_SRCS,
# IDLE_HOLD_SECS, SERVER_CPU, LOAD_CPU, QUIET_WAIT_SECS, QUIET_BUSY_PCT,
# KEEP_TMP=1 (keep logs).
#
# The helpers and both measurements live in bench/lib.sh, shared with the
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

WSLOAD=${WSLOAD:-/tmp/wsload}
WSLOAD_SRC=${WSLOAD_SRC:-/work/shared/tools/wsload.c}
LOADGEN=$WSLOAD

parse_servers "$@"

declare -a JSON_LINES=()
bench_init

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
  }

  local extra=""
  [[ $has_kids == 1 ]] && extra=",\"worker_rss_base_kib\":$IDLE_BASE_MAIN,\"worker_rss_10k_kib\":$IDLE_MAIN,\"worker_bytes_per_idle_conn\":$IDLE_PER_CONN_MAIN"
  JSON_LINES+=("{\"server\":\"$name\",\"echo_msgs_per_s\":{$ECHO_JSON},\"echo_conns\":$ECHO_CONNS,\"echo_size\":$ECHO_SIZE,\"echo_secs\":$ECHO_SECS,\"echo_server_cpu_pct\":{$ECHO_CPU_JSON},\"echo_other_cpu_pct\":{$ECHO_OTHER_JSON},\"rss_start_kib\":$rss_start,\"rss_base_kib\":$IDLE_BASE_TOTAL,\"rss_10k_kib\":$IDLE_TOTAL,\"bytes_per_idle_conn\":$IDLE_PER_CONN,\"idle_open\":$IDLE_OPEN$extra}")
}

# ---------------------------------------------------------------- main ----
check_prereqs "${SERVERS[@]}"

if [[ ! -x $WSLOAD || $WSLOAD_SRC -nt $WSLOAD ]]; then
  log "building $WSLOAD from $WSLOAD_SRC"
  cc -O2 -o "$WSLOAD" "$WSLOAD_SRC" -lcrypto
fi

raise_nofile

bench_all
