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
# The machine should otherwise be idle: before each echo run the script waits
# (up to QUIET_WAIT_SECS) for total CPU use to drop below QUIET_BUSY_PCT, and
# the "other%" column shows CPU used during the run by unrelated processes
# (neither the server, nor this script and wsload, nor kernel threads); large
# "other%" values mean noisy throughput numbers. The idle-memory baseline is
# read after the echo runs, i.e. from a warmed-up server.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")

WSLOAD=${WSLOAD:-/tmp/wsload}
WSLOAD_SRC=${WSLOAD_SRC:-/work/shared/tools/wsload.c}
WSGATE_BIN=${WSGATE_BIN:-$ROOT/.build/release/wsgate}
WSGATE_HOST=${WSGATE_HOST-127.0.0.1}
NGINX_BIN=${NGINX_BIN:-nginx}
NGINX_CONF=$BENCH_DIR/nginx/nginx.conf

ECHO_SECS=${ECHO_SECS:-10}
ECHO_CONNS=${ECHO_CONNS:-100}
ECHO_SIZE=${ECHO_SIZE:-64}
ECHO_DEPTHS=${ECHO_DEPTHS:-1 16}
WARMUP_SECS=${WARMUP_SECS:-2}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_SRCS=${IDLE_SRCS:-4}
IDLE_HOLD_SECS=${IDLE_HOLD_SECS:-8}   # must exceed SETTLE_SECS + a little
SETTLE_SECS=2
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

CLK_TCK=$(getconf CLK_TCK)
QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-60}
QUIET_BUSY_PCT=${QUIET_BUSY_PCT:-15}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { echo "usage: $0 [wsgate|nginx|all]" >&2; exit 2; }

TARGET=${1:-all}
case "$TARGET" in
  wsgate) SERVERS=(wsgate) ;;
  nginx) SERVERS=(nginx) ;;
  all) SERVERS=(wsgate nginx) ;;
  *) usage ;;
esac
[[ $# -le 1 ]] || usage

# ---------------------------------------------------------------- state ----
TMP_ROOT=$(mktemp -d /tmp/wsgate-bench.XXXXXX)
chmod 755 "$TMP_ROOT"          # nginx workers run as an unprivileged user
SERVER_PID=""                  # process we started (nginx master / wsgate)
SERVER_NAME=""
SERVER_LOG=""
LOAD_PID=""                    # wsload running in the background
FAILED=0
declare -a JSON_LINES=()

# True if the process exists and is not a zombie.
alive() {
  local st
  st=$(sed -n 's/^[^)]*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}

# Direct children, then grandchildren, ... of a pid.
descendants() {
  local kid
  for kid in $(pgrep -P "$1" 2>/dev/null || true); do
    echo "$kid"
    descendants "$kid"
  done
}

rss_kib() { awk '/^VmRSS:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# utime+stime (clock ticks) summed over pids.
cpu_ticks() {
  local total=0 p v
  for p in "$@"; do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || v=0
    total=$(( total + ${v:-0} ))
  done
  echo "$total"
}

# Non-idle clock ticks of the whole machine (user nice system irq softirq steal).
busy_ticks() { awk '/^cpu / { printf "%d", $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# Snapshot "pid ppid own_ticks reaped_children_ticks" of every process.
proc_snapshot() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk '{
    pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, f, " ");
    print pid, f[2], f[12] + f[13], f[14] + f[15] }' >"$1"
}

# CPU (% of one core) used between two snapshots by processes other than the
# excluded pids, this script (whose reaped children include wsload) and kernel
# threads: i.e. by other workloads sharing the machine. Short-lived processes
# are counted through their parent's reaped-children time (their whole
# lifetime, so this is an estimate that can overshoot; capped at all CPUs).
foreign_pct() {
  local s0=$1 s1=$2 secs=$3; shift 3
  awk -v hz="$CLK_TCK" -v secs="$secs" -v ncpu="$(nproc)" -v ex="$* $$" '
    BEGIN { n = split(ex, e, " "); for (i = 1; i <= n; i++) skip[e[i]] = 1 }
    FNR == NR { own[$1] = $3; kids[$1] = $4; next }
    {
      if (($1 in skip) || $1 == 2 || $2 == 2) next
      if ($1 in own) t += ($3 - own[$1]) + ($4 - kids[$1]); else t += $3 + $4
    }
    END { v = 100 * t / hz / secs; if (v > 100 * ncpu) v = 100 * ncpu
          printf "%d", (v < 0 ? 0 : v + 0.5) }' "$s0" "$s1"
}

# Wait (up to QUIET_WAIT_SECS) for a one-second window in which the machine is
# less than QUIET_BUSY_PCT busy, so that other workloads on a shared box do not
# distort the throughput figures. Sets QUIET_BUSY to the last sample.
QUIET_BUSY=0
wait_quiet() {
  local waited=0 a b
  while :; do
    a=$(busy_ticks); sleep 1; b=$(busy_ticks)
    QUIET_BUSY=$(( 100 * (b - a) / (CLK_TCK * $(nproc)) ))
    (( QUIET_BUSY < QUIET_BUSY_PCT )) && return 0
    (( waited >= QUIET_WAIT_SECS )) && break
    (( waited == 0 )) && log "machine is ${QUIET_BUSY}% busy; waiting up to ${QUIET_WAIT_SECS}s for it to calm down"
    waited=$(( waited + 1 ))
  done
  log "WARNING: machine still ${QUIET_BUSY}% busy; throughput figures will be noisy"
}

sum_rss() {
  local total=0 p
  for p in "$@"; do total=$(( total + $(rss_kib "$p") )); done
  echo "$total"
}

# Gracefully stop a pid we own; SIGKILL after a timeout.
stop_pid() {
  local pid=$1 what=$2
  [[ -n $pid ]] || return 0
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "$what ($pid) did not exit on SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  local kids
  kids=$(descendants "$SERVER_PID" || true)
  log "stopping $SERVER_NAME (pid $SERVER_PID)"
  stop_pid "$SERVER_PID" "$SERVER_NAME"
  # nginx workers (or any helper processes) must be gone as well.
  local k
  for k in $kids; do
    if alive "$k"; then kill -KILL "$k" 2>/dev/null || true; fi
  done
  SERVER_PID=""
}

cleanup() {
  local rc=$?
  set +e
  if [[ -n $LOAD_PID ]]; then kill -TERM "$LOAD_PID" 2>/dev/null; wait "$LOAD_PID" 2>/dev/null; LOAD_PID=""; fi
  if [[ $rc -ne 0 && -n $SERVER_LOG && -f $SERVER_LOG ]]; then
    log "last lines of $SERVER_LOG:"
    tail -n 20 "$SERVER_LOG" >&2
  fi
  stop_server
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    log "kept temp dir $TMP_ROOT"
  else
    rm -rf "$TMP_ROOT"
  fi
  exit "$rc"
}
trap cleanup EXIT
cd "$TMP_ROOT"                 # stray relative paths never touch the repo
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------- helpers ----
# Extract a numeric field from wsload's one-line JSON.
jnum() { sed -n "s/.*\"$1\":\\(-\\{0,1\\}[0-9.]*\\).*/\\1/p" <<<"$2"; }
# Same, but "null" when missing (for the JSON summary).
jval() { local v; v=$(jnum "$1" "$2"); echo "${v:-null}"; }

free_port() {
  # Below the ephemeral range so wsload's own sockets cannot collide with it.
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 12000 ))
    if [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

wait_ready() {
  local port=$1 code
  for _ in $(seq 1 600); do
    alive "$SERVER_PID" || die "$SERVER_NAME exited during startup"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
             "http://127.0.0.1:$port/api/v1/solution/health" 2>/dev/null || true)
    if [[ $code == 200 ]]; then return 0; fi
    sleep 0.1
  done
  die "$SERVER_NAME not healthy on port $port after 60 s"
}

# Check a wsload result line; flag (but do not abort on) failures.
check_result() {
  local label=$1 json=$2 expect_open=$3 open errs bad cfail
  open=$(jnum open "$json"); errs=$(jnum errors "$json")
  bad=$(jnum bad_echo "$json"); cfail=$(jnum connect_fail "$json")
  if [[ -z $open || $open != "$expect_open" || $errs != 0 || $bad != 0 || $cfail != 0 ]]; then
    log "WARNING: $SERVER_NAME $label: open=$open/$expect_open errors=$errs bad_echo=$bad connect_fail=$cfail"
    FAILED=1
    return 1
  fi
  return 0
}

# Start wsload pinned to LOAD_CPU in the background (a plain command, so
# LOAD_PID is wsload itself), stdout to $1.
start_wsload() {
  local out=$1; shift
  taskset -c "$LOAD_CPU" "$WSLOAD" "$@" >"$out" 2>"$out.err" &
  LOAD_PID=$!
}

# Wait for the background wsload; `wait` (unlike a foreground command) lets
# the INT/TERM traps run at once, and cleanup then stops wsload too.
wait_wsload() {
  local rc=0
  wait "$LOAD_PID" || rc=$?
  LOAD_PID=""
  (( rc == 0 )) || log "WARNING: wsload exited with status $rc: $(cat "$1.err" 2>/dev/null)"
}

# Run wsload to completion and print its JSON result line.
run_wsload() {
  local out=$TMP_ROOT/wsload.out
  start_wsload "$out" "$@"
  wait_wsload "$out"
  grep '^{' "$out" | tail -n 1 || true
}

# --------------------------------------------------------------- servers ----
start_wsgate() {
  local dir=$1 port=$2
  printf '%s\n' '{"rateLimit": {"messagesPerSecond": 0}}' >"$dir/wsgate.json"
  SERVER_LOG=$dir/wsgate.log
  # Bind to loopback like nginx does (wsgate's default host is 0.0.0.0);
  # WSGATE_HOST= (empty) omits the flag.
  local -a host_arg=()
  [[ -n $WSGATE_HOST ]] && host_arg=(--host "$WSGATE_HOST")
  # Run from the temp dir so nothing the server might write lands in the repo.
  (cd "$dir" && exec taskset -c "$SERVER_CPU" "$WSGATE_BIN" --config "$dir/wsgate.json" \
       --workers 1 --port "$port" --endpoints "$ROOT/Endpoints" "${host_arg[@]}") >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
}

start_nginx() {
  local dir=$1 port=$2
  sed -E "s/^([[:space:]]*listen[[:space:]]+127\.0\.0\.1:)[0-9]+/\1$port/" "$NGINX_CONF" >"$dir/nginx.conf"
  grep -Eq "listen[[:space:]]+127\.0\.0\.1:${port}[ ;]" "$dir/nginx.conf" || die "could not set port in nginx.conf"
  SERVER_LOG=$dir/error.log
  : >"$SERVER_LOG"
  taskset -c "$SERVER_CPU" "$NGINX_BIN" -p "$dir/" -c "$dir/nginx.conf" -g 'daemon off;' \
      >"$dir/nginx.stdout" 2>&1 &
  SERVER_PID=$!
}

# ------------------------------------------------------------- one run ----
bench_server() {
  local name=$1 dir port url
  dir="$TMP_ROOT/$name"; mkdir -p "$dir"; chmod 755 "$dir"
  port=$(free_port)
  url="ws://127.0.0.1:$port/echo"
  SERVER_NAME=$name

  log "starting $name on 127.0.0.1:$port (cpu $SERVER_CPU)"
  "start_$name" "$dir" "$port"
  wait_ready "$port"
  # nginx: wait for the worker to exist before reading RSS.
  if [[ $name == nginx ]]; then
    for _ in $(seq 1 50); do [[ -n $(descendants "$SERVER_PID") ]] && break; sleep 0.1; done
  fi
  local kids rss_start
  kids=$(descendants "$SERVER_PID")
  # shellcheck disable=SC2086
  rss_start=$(sum_rss "$SERVER_PID" $kids)

  # ---- (a) echo throughput
  log "$name: warm-up ${WARMUP_SECS}s"
  local warm
  run_wsload -m echo -c "$ECHO_CONNS" -s "$ECHO_SIZE" -p 1 -d "$WARMUP_SECS" "$url" >"$dir/warm.json"
  warm=$(cat "$dir/warm.json")
  check_result "warm-up" "$warm" "$ECHO_CONNS" || true

  local d res echo_json="" cpu_json="" other_json="" echo_rows="" srv_pids
  local c0 c1 t0 t1 pct other
  for d in $ECHO_DEPTHS; do
    wait_quiet
    log "$name: echo -c $ECHO_CONNS -s $ECHO_SIZE -p $d -d $ECHO_SECS"
    srv_pids="$SERVER_PID $(descendants "$SERVER_PID" | tr '\n' ' ')"
    proc_snapshot "$TMP_ROOT/snap0"
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $srv_pids)
    t0=$(date +%s.%N)
    run_wsload -m echo -c "$ECHO_CONNS" -s "$ECHO_SIZE" -p "$d" -d "$ECHO_SECS" "$url" >"$dir/echo-p$d.json"
    res=$(cat "$dir/echo-p$d.json")
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $srv_pids)
    t1=$(date +%s.%N)
    proc_snapshot "$TMP_ROOT/snap1"
    # CPU use (in % of one core) over the whole wsload run (connect + measure
    # + 0.5 s drain): the server's, and that of unrelated processes.
    pct=$(awk -v c="$(( c1 - c0 ))" -v hz="$CLK_TCK" -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", 100 * c / hz / (b - a) + 0.5 }')
    # shellcheck disable=SC2086
    other=$(foreign_pct "$TMP_ROOT/snap0" "$TMP_ROOT/snap1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" $srv_pids)
    log "  $res"
    local ok=ok
    check_result "echo -p $d" "$res" "$ECHO_CONNS" || ok=FAIL
    echo_json+="${echo_json:+,}\"p$d\":$(jval msgs_per_s "$res")"
    cpu_json+="${cpu_json:+,}\"p$d\":$pct"
    other_json+="${other_json:+,}\"p$d\":$other"
    echo_rows+=$(printf '  %-22s %12s %9s %9s %9s %9s %9s %7s %s' "echo -p $d" \
      "$(jnum msgs_per_s "$res")" "$(jnum p50_us "$res")" "$(jnum p99_us "$res")" \
      "$(jnum p999_us "$res")" "$pct" "$other" "$(jnum errors "$res")" "$ok")$'\n'
  done

  # ---- (b) idle-connection memory
  sleep "$SETTLE_SECS"       # let the server reap the echo connections
  kids=$(descendants "$SERVER_PID")
  local base_total base_main
  # shellcheck disable=SC2086
  base_total=$(sum_rss "$SERVER_PID" $kids)
  # shellcheck disable=SC2086
  [[ -n $kids ]] && base_main=$(sum_rss $kids) || base_main=$(rss_kib "$SERVER_PID")

  log "$name: opening $IDLE_CONNS idle connections over $IDLE_SRCS source addresses"
  start_wsload "$dir/idle.out" -m idle -c "$IDLE_CONNS" -S "$IDLE_SRCS" -d "$IDLE_HOLD_SECS" "$url"
  local ready=""
  for _ in $(seq 1 1500); do
    ready=$(sed -n 's/^READY \([0-9]*\)$/\1/p' "$dir/idle.out")
    [[ -n $ready ]] && break
    alive "$LOAD_PID" || break
    sleep 0.1
  done
  [[ -n $ready ]] || die "wsload idle never reported READY: $(cat "$dir/idle.out.err" "$dir/idle.out")"
  sleep "$SETTLE_SECS"
  alive "$SERVER_PID" || die "$name died while holding idle connections"
  kids=$(descendants "$SERVER_PID")
  local idle_total idle_main
  # shellcheck disable=SC2086
  idle_total=$(sum_rss "$SERVER_PID" $kids)
  # shellcheck disable=SC2086
  [[ -n $kids ]] && idle_main=$(sum_rss $kids) || idle_main=$(rss_kib "$SERVER_PID")
  wait_wsload "$dir/idle.out"
  local idle_res
  idle_res=$(grep '^{' "$dir/idle.out" | tail -n 1)
  log "  READY $ready; $idle_res"
  local idle_ok=ok
  check_result "idle" "$idle_res" "$IDLE_CONNS" || idle_ok=FAIL

  local open per_conn per_conn_main
  open=$(jnum open "$idle_res"); [[ -n $open && $open -gt 0 ]] || open=$IDLE_CONNS
  per_conn=$(awk -v a="$base_total" -v b="$idle_total" -v n="$open" 'BEGIN { printf "%d", (b - a) * 1024 / n + 0.5 }')
  per_conn_main=$(awk -v a="$base_main" -v b="$idle_main" -v n="$open" 'BEGIN { printf "%d", (b - a) * 1024 / n + 0.5 }')

  stop_server

  # ---- report
  local has_kids=0; [[ $name == nginx ]] && has_kids=1
  {
    echo
    echo "== $name  (server cpu $SERVER_CPU, load cpu $LOAD_CPU, $ECHO_CONNS conns x $ECHO_SIZE B, ${ECHO_SECS}s)"
    printf '  %-22s %12s %9s %9s %9s %9s %9s %7s %s\n' test "msgs/s" "p50 us" "p99 us" "p99.9 us" "srv cpu%" "other%" errors check
    printf '%s' "$echo_rows"
    printf '  %-22s %12s %12s %14s %s\n' "memory (RSS)" "base KiB" "10k idle KiB" "B per idle conn" check
    local label="total"; [[ $has_kids == 1 ]] && label="master+worker"
    printf '  %-22s %12s %12s %14s %s\n' "$label" "$base_total" "$idle_total" "$per_conn" "$idle_ok"
    [[ $has_kids == 1 ]] && printf '  %-22s %12s %12s %14s\n' "worker only" "$base_main" "$idle_main" "$per_conn_main"
    printf '  %-22s %12s\n' "rss right after start" "$rss_start"
    printf '  idle connections open: %s (READY %s), connect time %ss\n' "$open" "$ready" "$(jnum connect_s "$idle_res")"
  }

  local extra=""
  [[ $has_kids == 1 ]] && extra=",\"worker_rss_base_kib\":$base_main,\"worker_rss_10k_kib\":$idle_main,\"worker_bytes_per_idle_conn\":$per_conn_main"
  JSON_LINES+=("{\"server\":\"$name\",\"echo_msgs_per_s\":{$echo_json},\"echo_conns\":$ECHO_CONNS,\"echo_size\":$ECHO_SIZE,\"echo_secs\":$ECHO_SECS,\"echo_server_cpu_pct\":{$cpu_json},\"echo_other_cpu_pct\":{$other_json},\"rss_start_kib\":$rss_start,\"rss_base_kib\":$base_total,\"rss_10k_kib\":$idle_total,\"bytes_per_idle_conn\":$per_conn,\"idle_open\":$open$extra}")
}

# ---------------------------------------------------------------- main ----
command -v taskset >/dev/null || die "taskset not found (util-linux)"
command -v curl >/dev/null || die "curl not found"
command -v ss >/dev/null || die "ss not found (iproute2)"
command -v pgrep >/dev/null || die "pgrep not found (procps)"
(( $(nproc) >= 2 )) || log "WARNING: fewer than 2 CPUs; server and load generator will share a core"

for s in "${SERVERS[@]}"; do
  case "$s" in
    wsgate) [[ -x $WSGATE_BIN ]] || die "wsgate binary not found at $WSGATE_BIN (build it with: swift build -c release)" ;;
    nginx)
      command -v "$NGINX_BIN" >/dev/null || die "nginx not found"
      [[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]] || die "libnginx-mod-http-lua not installed"
      [[ -f /usr/share/lua/5.1/nginx/websocket/server.lua ]] || die "lua-nginx-websocket not installed"
      ;;
  esac
done

if [[ ! -x $WSLOAD || $WSLOAD_SRC -nt $WSLOAD ]]; then
  log "building $WSLOAD from $WSLOAD_SRC"
  cc -O2 -o "$WSLOAD" "$WSLOAD_SRC" -lcrypto
fi

# 10,000 client sockets in wsload and as many in the server. Ask for 65536;
# without CAP_SYS_RESOURCE (e.g. in some containers) the hard limit cannot be
# raised, so fall back to it as long as it still covers the idle test.
if ! ulimit -n 65536 2>/dev/null; then
  hard=$(ulimit -Hn)
  [[ $hard == unlimited ]] && hard=65536
  ulimit -n "$hard"
  (( hard >= IDLE_CONNS + 1024 )) || die "open-file hard limit $hard is too low for $IDLE_CONNS idle connections (need 65536; run as root)"
  log "WARNING: could not raise the open-file limit to 65536; using the hard limit $hard"
fi

for s in "${SERVERS[@]}"; do
  bench_server "$s"
done

echo
for line in "${JSON_LINES[@]}"; do echo "$line"; done

if [[ $FAILED != 0 ]]; then
  log "some load-generator runs reported errors (see warnings above)"
  exit 1
fi
