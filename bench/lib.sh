# shellcheck shell=bash
# shellcheck disable=SC2034  # results are read by the sourcing scripts
# Shared helpers of the benchmark harnesses bench/run.sh (ws://) and
# bench/run-tls.sh (wss://), also used by bench/compare.sh (alternating
# rounds, ratios of medians), bench/churn-memory.sh, bench/push.sh,
# bench/waiting-latency.sh, bench/fanout.sh and bench/cluster.sh. Sourced, never run;
# the caller sets `set -euo pipefail` and BENCH_DIR / ROOT first.
#
# What lives here: tunables common to both harnesses, installing what they
# need, building the load generator (bench/wsload.c) and the other C tools,
# process and CPU/RSS bookkeeping, the quiet-machine wait, starting/stopping
# wsgate and nginx (optionally with TLS), running the load generator, the
# two measurements both harnesses make: echo throughput and idle-connection
# memory, and the checks and summary helpers (medians, ratios) the other
# harnesses share. Each harness prints its own tables.

# ------------------------------------------------------------ tunables ----
WSGATE_BIN=${WSGATE_BIN:-$ROOT/.build/release/wsgate}
WSGATE_HOST=${WSGATE_HOST-127.0.0.1}
NGINX_BIN=${NGINX_BIN:-nginx}
NGINX_CONF=$BENCH_DIR/nginx/nginx.conf
NGINX_ECHO_LUA=$BENCH_DIR/nginx/echo.lua
NGINX_TLS_CONF=$BENCH_DIR/nginx/tls.conf

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

# The project's load generator, bench/wsload.c, built by build_loadgen. The
# default binary name is this project's own, so that another checkout's
# /tmp/wsload is neither used nor overwritten.
WSLOAD_SRC=$BENCH_DIR/wsload.c
WSLOAD=${WSLOAD:-/tmp/wsgate-bench-wsload}
# Every C tool of the bench includes it.
WSBENCH_H=$BENCH_DIR/wsbench.h
LOADGEN=$WSLOAD
# http or https: how the health route is probed.
HEALTH_SCHEME=http
# wsgate's config file contents (JSON), written by start_wsgate.
WSGATE_CONFIG='{"rateLimit": {"messagesPerSecond": 0}}'
# The endpoints folder start_wsgate passes to wsgate; harnesses with their
# own scripts (bench/push.sh, bench/waiting-latency.sh) point it at a folder
# in their temp dir.
WSGATE_ENDPOINTS=$ROOT/Endpoints
# Pids of the harness's own helpers (a WebSocket sink, a stub HTTP server)
# that measured_run leaves out of "other%", like the server and itself.
OTHER_EXCLUDE_PIDS=""
# When set (a directory holding cert.pem and key.pem), nginx is started with
# TLS: see start_nginx.
NGINX_TLS_DIR=""

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- state ----
TMP_ROOT=""
SERVER_PID=""                  # process we started (nginx master / wsgate)
# Servers a harness keeps running across measurements (compare.sh with
# PAIRED=1): "name:pid" words (keep_server), stopped by stop_kept_servers
# and, on any exit, by cleanup.
KEPT_SERVERS=""
SERVER_NAME=""
SERVER_LOG=""
LOAD_PID=""                    # load generator running in the background
FAILED=0

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

# CPU ticks of this shell's reaped children (cutime+cstime): read just before
# starting the load generator and just after waiting for it, the difference
# is the load generator's own CPU time.
reaped_ticks() { sed 's/^.*) //' "/proc/$$/stat" | awk '{ print $14 + $15 }'; }

# Non-idle clock ticks of the whole machine (user nice system irq softirq steal).
busy_ticks() { awk '/^cpu / { printf "%d", $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# Snapshot "pid ppid own_ticks reaped_children_ticks" of every process.
proc_snapshot() {
  # A process that exits between the glob and the read makes cat fail: not an error here.
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
    pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, f, " ");
    print pid, f[2], f[12] + f[13], f[14] + f[15] }' >"$1"
}

# CPU (% of one core) used between two snapshots by processes other than the
# excluded pids, this script (whose reaped children include the load
# generator) and kernel threads: i.e. by other workloads sharing the machine.
# Short-lived processes are counted through their parent's reaped-children
# time (their whole lifetime, so this is an estimate that can overshoot;
# capped at all CPUs).
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

# The server start_server started last stays up, listed in KEPT_SERVERS, and
# is no longer SERVER_PID (which stop_server and cleanup stop).
keep_server() {
  KEPT_SERVERS+="${KEPT_SERVERS:+ }$SERVER_NAME:$SERVER_PID"
  SERVER_PID=""
}
stop_kept_servers() {
  local kept
  for kept in $KEPT_SERVERS; do
    SERVER_NAME=${kept%%:*} SERVER_PID=${kept#*:}
    stop_server
  done
  KEPT_SERVERS=""
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
  stop_kept_servers
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    log "kept temp dir $TMP_ROOT"
  else
    rm -rf "$TMP_ROOT"
  fi
  exit "$rc"
}

# Create the temp dir, install the traps and move into it (stray relative
# paths never touch the repository).
bench_init() {
  TMP_ROOT=$(mktemp -d /tmp/wsgate-bench.XXXXXX)
  chmod 755 "$TMP_ROOT"        # nginx workers run as an unprivileged user
  trap cleanup EXIT
  cd "$TMP_ROOT" || exit 1
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# Debian packages are installed on demand so that a fresh machine can run the
# harnesses as they are: `apt-get update` once, then one `apt-get install` of
# everything missing. Without root or apt-get, the missing packages are named
# and the run stops.
APT_UPDATED=0
apt_install() {
  (( $# > 0 )) || return 0
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    die "missing Debian packages: $* (install them, or run as root with apt-get available)"
  fi
  # dpkg's progress would bury the bench log; it is shown only on failure.
  local out=${TMP_ROOT:-/tmp}/apt.log
  log "installing $* (apt-get, log in $out)"
  if [[ $APT_UPDATED == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >"$out" 2>&1 \
      || { tail -n 20 "$out" >&2; die "apt-get update failed"; }
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$out" 2>&1 \
    || { tail -n 20 "$out" >&2; die "apt-get install $* failed"; }
}

# Tools and packages needed for SERVERS and the load generator; arguments are
# further "command:package" pairs (run-tls.sh needs the openssl command line
# tool).
check_prereqs() {
  local -a missing=()
  local s pair
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v curl >/dev/null || missing+=(curl)
  command -v ss >/dev/null || missing+=(iproute2)
  command -v pgrep >/dev/null || missing+=(procps)
  # The load generator is built from source unless WSLOAD already points at
  # a usable binary its sources are not newer than.
  if c_tool_stale "$WSLOAD_SRC" "$WSLOAD"; then
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    [[ -f /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
  fi
  for s in "${SERVERS[@]}"; do
    case "$s" in
      wsgate) [[ -x $WSGATE_BIN ]] || die "wsgate binary not found at $WSGATE_BIN (build it with: swift build -c release --product wsgate)" ;;
      nginx)
        # A custom NGINX_BIN is the caller's business; the stock one is Debian's.
        [[ $NGINX_BIN != nginx ]] || command -v nginx >/dev/null || missing+=(nginx)
        [[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]] || missing+=(libnginx-mod-http-lua)
        [[ -f /usr/share/lua/5.1/nginx/websocket/server.lua ]] || missing+=(lua-nginx-websocket)
        ;;
    esac
  done
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  apt_install "${missing[@]}"
  for s in "${SERVERS[@]}"; do
    [[ $s != nginx ]] || command -v "$NGINX_BIN" >/dev/null || die "nginx not found ($NGINX_BIN)"
  done
  (( $(nproc) >= 2 )) || log "WARNING: fewer than 2 CPUs; server and load generator will share a core"
}

# True when the C tool BIN ($2) is missing or older than its source SRC ($1)
# or the header all the tools share.
c_tool_stale() { [[ ! -x $2 || $1 -nt $2 || $WSBENCH_H -nt $2 ]]; }

# Build bench/wsload.c into $WSLOAD when the binary is missing or stale.
build_loadgen() { build_c_tool "$WSLOAD_SRC" "$WSLOAD" -lssl -lcrypto; }

# Build one of the bench's C tools (libc only unless libraries are given):
# build_c_tool SRC BIN [LIBS...] builds SRC into BIN when BIN is missing or
# stale (c_tool_stale). The binary is written under a temporary name and
# renamed, so a harness running at the same time never executes a
# half-written file.
build_c_tool() {
  local src=$1 bin=$2; shift 2
  c_tool_stale "$src" "$bin" || return 0
  command -v cc >/dev/null || apt_install gcc libc6-dev
  log "building $bin from $src"
  local tmp=$bin.$$.tmp
  cc -O2 -Wall -Wextra -o "$tmp" "$src" "$@" || { rm -f "$tmp"; die "cannot build $src"; }
  mv -f "$tmp" "$bin"
}

# Client sockets in the load generator and as many in the server. Ask for
# 65536; without CAP_SYS_RESOURCE (e.g. in some containers) the hard limit
# cannot be raised, so fall back to it as long as it still covers the idle
# test.
raise_nofile() {
  if ! ulimit -n 65536 2>/dev/null; then
    local hard
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=65536
    ulimit -n "$hard"
    (( hard >= IDLE_CONNS + 1024 )) || die "open-file hard limit $hard is too low for $IDLE_CONNS idle connections (need 65536; run as root)"
    log "WARNING: could not raise the open-file limit to 65536; using the hard limit $hard"
  fi
}

# ------------------------------------------------------------- helpers ----
# Extract a numeric field from the load generator's one-line JSON.
jnum() { sed -n "s/.*\"$1\":\\(-\\{0,1\\}[0-9.]*\\).*/\\1/p" <<<"$2"; }
# Same, but "null" when missing (for the JSON summary).
jval() { local v; v=$(jnum "$1" "$2"); echo "${v:-null}"; }
# A string field (no escapes in our values).
jstr() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" <<<"$2"; }

free_port() {
  # Below the ephemeral range so the load generator's own sockets cannot
  # collide with it.
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 12000 ))
    if [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

wait_ready() {
  local port=$1 code
  local -a insecure=()
  # -k: the TLS bench uses a throw-away self-signed certificate.
  [[ $HEALTH_SCHEME == https ]] && insecure=(-k)
  for _ in $(seq 1 600); do
    alive "$SERVER_PID" || die "$SERVER_NAME exited during startup"
    code=$(curl -s "${insecure[@]}" -o /dev/null -w '%{http_code}' --max-time 1 \
             "$HEALTH_SCHEME://127.0.0.1:$port/api/v1/solution/health" 2>/dev/null || true)
    if [[ $code == 200 ]]; then return 0; fi
    sleep 0.1
  done
  die "$SERVER_NAME not healthy on port $port after 60 s"
}

# Check a load-generator result line; flag (but do not abort on) failures.
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

# Start the load generator pinned to LOAD_CPU in the background (a plain
# command, so LOAD_PID is the load generator itself), stdout to $1.
start_load() {
  local out=$1; shift
  taskset -c "$LOAD_CPU" "$LOADGEN" "$@" >"$out" 2>"$out.err" &
  LOAD_PID=$!
}

# Wait for the background load generator; `wait` (unlike a foreground
# command) lets the INT/TERM traps run at once, and cleanup then stops it too.
wait_load() {
  local rc=0
  wait "$LOAD_PID" || rc=$?
  LOAD_PID=""
  (( rc == 0 )) || log "WARNING: $(basename "$LOADGEN") exited with status $rc: $(cat "$1.err" 2>/dev/null)"
}

# Run the load generator to completion and print its JSON result line.
run_load() {
  local out=$TMP_ROOT/load.out
  start_load "$out" "$@"
  wait_load "$out"
  grep '^{' "$out" | tail -n 1 || true
}

# --------------------------------------------------------------- servers ----
start_wsgate() {
  local dir=$1 port=$2
  printf '%s\n' "$WSGATE_CONFIG" >"$dir/wsgate.json"
  SERVER_LOG=$dir/wsgate.log
  # Bind to loopback like nginx does (wsgate's default host is 0.0.0.0);
  # WSGATE_HOST= (empty) omits the flag.
  local -a host_arg=()
  [[ -n $WSGATE_HOST ]] && host_arg=(--host "$WSGATE_HOST")
  # Run from the temp dir so nothing the server might write lands in the repo.
  (cd "$dir" && exec taskset -c "$SERVER_CPU" "$WSGATE_BIN" --config "$dir/wsgate.json" \
       --workers 1 --port "$port" --endpoints "$WSGATE_ENDPOINTS" "${host_arg[@]}") >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
}

# nginx.conf is rendered into the server's temp dir with the port replaced;
# echo.lua sits next to it (content_by_lua_file resolves it against the -p
# prefix). With NGINX_TLS_DIR set, the listen socket gets `ssl` and the
# server block includes tls.conf, which names cert.pem and key.pem in the
# same directory.
start_nginx() {
  local dir=$1 port=$2
  local listen_re='^([[:space:]]*listen[[:space:]]+127\.0\.0\.1:)[0-9]+'
  sed -E "s/$listen_re/\1$port/" "$NGINX_CONF" >"$dir/nginx.conf"
  grep -Eq "listen[[:space:]]+127\.0\.0\.1:${port}[ ;]" "$dir/nginx.conf" || die "could not set port in nginx.conf"
  cp "$NGINX_ECHO_LUA" "$dir/echo.lua"
  if [[ -n $NGINX_TLS_DIR ]]; then
    sed -E -i -e "s/($listen_re)/\1 ssl/" \
      -e "/$listen_re/a\\        include tls.conf;" "$dir/nginx.conf"
    grep -Eq "listen[[:space:]]+127\.0\.0\.1:${port} ssl[ ;]" "$dir/nginx.conf" || die "could not enable ssl in nginx.conf"
    grep -q "include tls.conf;" "$dir/nginx.conf" || die "could not include tls.conf in nginx.conf"
    cp "$NGINX_TLS_CONF" "$dir/tls.conf"
    [[ $NGINX_TLS_DIR -ef $dir ]] || cp "$NGINX_TLS_DIR/cert.pem" "$NGINX_TLS_DIR/key.pem" "$dir/"
  fi
  SERVER_LOG=$dir/error.log
  : >"$SERVER_LOG"
  taskset -c "$SERVER_CPU" "$NGINX_BIN" -p "$dir/" -c "$dir/nginx.conf" -g 'daemon off;' \
      >"$dir/nginx.stdout" 2>&1 &
  SERVER_PID=$!
}

# Start server $1 in directory $2 on port $3 and wait until it is healthy
# (for nginx: until its worker exists, so that RSS readings include it).
start_server() {
  local name=$1 dir=$2 port=$3
  SERVER_NAME=$name
  log "starting $name on 127.0.0.1:$port (cpu $SERVER_CPU)"
  "start_$name" "$dir" "$port"
  wait_ready "$port"
  if [[ $name == nginx ]]; then
    for _ in $(seq 1 50); do [[ -n $(descendants "$SERVER_PID") ]] && break; sleep 0.1; done
  fi
}

# ------------------------------------------------------- measurements ----
# CPU accounting around whatever runs between cpu_watch_start (or
# cpu_watch_pids PID..., naming the server's processes itself) and
# cpu_watch_stop: the server's (SERVER_PID and its descendants), this
# shell's reaped children (the load generator, waited for in between) and
# everything else on the machine. cpu_watch_stop sets RUN_SECS (wall time),
# RUN_SRV_TICKS, RUN_SRV_PCT (server CPU, % of one core), RUN_LOAD_PCT (the
# load generator's) and RUN_OTHER_PCT (unrelated processes, see foreign_pct;
# OTHER_EXCLUDE_PIDS are left out too).
WATCH_PIDS="" WATCH_C0=0 WATCH_L0=0 WATCH_T0=0
# shellcheck disable=SC2046  # pids, one word each
cpu_watch_start() { cpu_watch_pids "$SERVER_PID" $(descendants "$SERVER_PID"); }
cpu_watch_pids() {
  WATCH_PIDS="$*"
  proc_snapshot "$TMP_ROOT/snap0"
  # shellcheck disable=SC2086
  WATCH_C0=$(cpu_ticks $WATCH_PIDS)
  WATCH_L0=$(reaped_ticks)
  WATCH_T0=$(date +%s.%N)
}
cpu_watch_stop() {
  local c1 l1 t1
  l1=$(reaped_ticks)
  # shellcheck disable=SC2086
  c1=$(cpu_ticks $WATCH_PIDS)
  t1=$(date +%s.%N)
  proc_snapshot "$TMP_ROOT/snap1"
  RUN_SECS=$(awk -v a="$WATCH_T0" -v b="$t1" 'BEGIN { print b - a }')
  RUN_SRV_TICKS=$(( c1 - WATCH_C0 ))
  RUN_SRV_PCT=$(awk -v c="$RUN_SRV_TICKS" -v hz="$CLK_TCK" -v s="$RUN_SECS" 'BEGIN { printf "%d", 100 * c / hz / s + 0.5 }')
  RUN_LOAD_PCT=$(awk -v c="$(( l1 - WATCH_L0 ))" -v hz="$CLK_TCK" -v s="$RUN_SECS" 'BEGIN { printf "%d", 100 * c / hz / s + 0.5 }')
  # shellcheck disable=SC2086
  RUN_OTHER_PCT=$(foreign_pct "$TMP_ROOT/snap0" "$TMP_ROOT/snap1" "$RUN_SECS" $WATCH_PIDS $OTHER_EXCLUDE_PIDS)
}

# One load-generator run on a quiet machine, with CPU accounting. Usage:
#   measured_run OUTFILE ARGS...
# Sets RUN_RES (the JSON line, also written to OUTFILE) and, through
# cpu_watch_stop, RUN_SECS (the whole run: connect + measure + drain) and the
# CPU figures.
measured_run() {
  local out=$1; shift
  wait_quiet
  cpu_watch_start
  run_load "$@" >"$out"
  cpu_watch_stop
  RUN_RES=$(cat "$out")
}

# Unreported warm-up: ECHO_CONNS connections echoing for WARMUP_SECS.
echo_warmup() {
  local url=$1 dir=$2 warm
  log "$SERVER_NAME: warm-up ${WARMUP_SECS}s"
  run_load -m echo -c "$ECHO_CONNS" -s "$ECHO_SIZE" -p 1 -d "$WARMUP_SECS" "$url" >"$dir/warm.json"
  warm=$(cat "$dir/warm.json")
  check_result "warm-up" "$warm" "$ECHO_CONNS" || true
}

# Echo throughput at each depth of ECHO_DEPTHS against URL, results in DIR.
# Sets ECHO_ROWS (table rows; with ECHO_LOAD_COLUMN=1 a "load cpu%" column
# comes before "other%"), and the JSON fragments ECHO_JSON (msgs/s),
# ECHO_CPU_JSON, ECHO_LOAD_JSON and ECHO_OTHER_JSON, keyed "p<depth>".
ECHO_LOAD_COLUMN=0
echo_header() {
  if [[ $ECHO_LOAD_COLUMN == 1 ]]; then
    printf '  %-22s %12s %9s %9s %9s %9s %9s %9s %7s %s\n' test "msgs/s" "p50 us" "p99 us" "p99.9 us" "srv cpu%" "load cpu%" "other%" errors check
  else
    printf '  %-22s %12s %9s %9s %9s %9s %9s %7s %s\n' test "msgs/s" "p50 us" "p99 us" "p99.9 us" "srv cpu%" "other%" errors check
  fi
}
measure_echo() {
  local url=$1 dir=$2 d res ok load_col
  ECHO_ROWS="" ECHO_JSON="" ECHO_CPU_JSON="" ECHO_LOAD_JSON="" ECHO_OTHER_JSON=""
  for d in $ECHO_DEPTHS; do
    log "$SERVER_NAME: echo -c $ECHO_CONNS -s $ECHO_SIZE -p $d -d $ECHO_SECS"
    measured_run "$dir/echo-p$d.json" -m echo -c "$ECHO_CONNS" -s "$ECHO_SIZE" -p "$d" -d "$ECHO_SECS" "$url"
    res=$RUN_RES
    log "  $res"
    ok=ok
    check_result "echo -p $d" "$res" "$ECHO_CONNS" || ok=FAIL
    ECHO_JSON+="${ECHO_JSON:+,}\"p$d\":$(jval msgs_per_s "$res")"
    ECHO_CPU_JSON+="${ECHO_CPU_JSON:+,}\"p$d\":$RUN_SRV_PCT"
    ECHO_LOAD_JSON+="${ECHO_LOAD_JSON:+,}\"p$d\":$RUN_LOAD_PCT"
    ECHO_OTHER_JSON+="${ECHO_OTHER_JSON:+,}\"p$d\":$RUN_OTHER_PCT"
    load_col=""
    [[ $ECHO_LOAD_COLUMN == 1 ]] && load_col=$(printf ' %9s' "$RUN_LOAD_PCT")
    ECHO_ROWS+=$(printf '  %-22s %12s %9s %9s %9s %9s%s %9s %7s %s' "echo -p $d" \
      "$(jnum msgs_per_s "$res")" "$(jnum p50_us "$res")" "$(jnum p99_us "$res")" \
      "$(jnum p999_us "$res")" "$RUN_SRV_PCT" "$load_col" "$RUN_OTHER_PCT" "$(jnum errors "$res")" "$ok")$'\n'
  done
}

# Resident memory of IDLE_CONNS idle connections to URL. Usage:
#   measure_idle URL DIR TAG [extra load-generator args]
# Waits SETTLE_SECS, reads the baseline RSS, opens the connections (spread
# over IDLE_SRCS source addresses), waits SETTLE_SECS more, reads RSS again.
# Sets IDLE_BASE_TOTAL / IDLE_TOTAL (KiB, all server processes),
# IDLE_BASE_MAIN / IDLE_MAIN (the nginx worker alone; wsgate: the process),
# IDLE_PER_CONN / IDLE_PER_CONN_MAIN (bytes per connection), IDLE_OPEN,
# IDLE_READY, IDLE_RES (the JSON line) and IDLE_OK (ok or FAIL).
measure_idle() {
  local url=$1 dir=$2 tag=$3; shift 3
  local kids
  sleep "$SETTLE_SECS"       # let the server reap earlier connections
  kids=$(descendants "$SERVER_PID")
  # shellcheck disable=SC2086
  IDLE_BASE_TOTAL=$(sum_rss "$SERVER_PID" $kids)
  # shellcheck disable=SC2086
  [[ -n $kids ]] && IDLE_BASE_MAIN=$(sum_rss $kids) || IDLE_BASE_MAIN=$(rss_kib "$SERVER_PID")

  log "$SERVER_NAME: opening $IDLE_CONNS idle connections over $IDLE_SRCS source addresses${*:+ ($*)}"
  local out=$dir/idle-$tag.out
  start_load "$out" -m idle -c "$IDLE_CONNS" -S "$IDLE_SRCS" -d "$IDLE_HOLD_SECS" "$@" "$url"
  IDLE_READY=""
  for _ in $(seq 1 1500); do
    IDLE_READY=$(sed -n 's/^READY \([0-9]*\)$/\1/p' "$out")
    [[ -n $IDLE_READY ]] && break
    alive "$LOAD_PID" || break
    sleep 0.1
  done
  [[ -n $IDLE_READY ]] || die "$(basename "$LOADGEN") idle never reported READY: $(cat "$out.err" "$out")"
  sleep "$SETTLE_SECS"
  alive "$SERVER_PID" || die "$SERVER_NAME died while holding idle connections"
  kids=$(descendants "$SERVER_PID")
  # shellcheck disable=SC2086
  IDLE_TOTAL=$(sum_rss "$SERVER_PID" $kids)
  # shellcheck disable=SC2086
  [[ -n $kids ]] && IDLE_MAIN=$(sum_rss $kids) || IDLE_MAIN=$(rss_kib "$SERVER_PID")
  wait_load "$out"
  IDLE_RES=$(grep '^{' "$out" | tail -n 1 || true)
  log "  READY $IDLE_READY; $IDLE_RES"
  IDLE_OK=ok
  check_result "idle${*:+ ($*)}" "$IDLE_RES" "$IDLE_CONNS" || IDLE_OK=FAIL

  IDLE_OPEN=$(jnum open "$IDLE_RES"); [[ -n $IDLE_OPEN && $IDLE_OPEN -gt 0 ]] || IDLE_OPEN=$IDLE_CONNS
  IDLE_PER_CONN=$(awk -v a="$IDLE_BASE_TOTAL" -v b="$IDLE_TOTAL" -v n="$IDLE_OPEN" 'BEGIN { printf "%d", (b - a) * 1024 / n + 0.5 }')
  IDLE_PER_CONN_MAIN=$(awk -v a="$IDLE_BASE_MAIN" -v b="$IDLE_MAIN" -v n="$IDLE_OPEN" 'BEGIN { printf "%d", (b - a) * 1024 / n + 0.5 }')
}

# Sets SERVERS from the scripts' one optional argument: wsgate, nginx or all (the default).
parse_servers() {
  local target=${1:-all}
  case "$target" in
    wsgate) SERVERS=(wsgate) ;;
    nginx) SERVERS=(nginx) ;;
    all) SERVERS=(wsgate nginx) ;;
    *) echo "usage: $0 [wsgate|nginx|all]" >&2; exit 2 ;;
  esac
  if [[ $# -gt 1 ]]; then echo "usage: $0 [wsgate|nginx|all]" >&2; exit 2; fi
}

# Runs the script's bench_server for each of SERVERS, prints the JSON lines it collected, and
# fails if any run reported errors.
bench_all() {
  local s line
  for s in "${SERVERS[@]}"; do
    bench_server "$s"
  done
  echo
  for line in "${JSON_LINES[@]}"; do echo "$line"; done
  if [[ $FAILED != 0 ]]; then
    log "some runs reported errors (see warnings above)"
    exit 1
  fi
}

# ------------------------------------------------- checks and summaries ----
# Die unless each variable named holds a positive integer / a non-negative
# integer / a message size fanout.c takes.
need_positive() {
  local v
  for v in "$@"; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"; done
}
need_nonnegative() {
  local v
  for v in "$@"; do [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"; done
}
need_msg_size() {
  local v
  for v in "$@"; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || (( ${!v} < 40 || ${!v} > 65535 )); then die "$v must be 40..65535"; fi
  done
}

# The script's arguments ($3...), each one of the names in the array named
# $1, into the array named $2: each once, in their order; all the names when
# there are none. An unknown one calls the script's usage.
pick_names() {
  local -n names_all=$1 names_out=$2
  local arg
  shift 2
  names_out=()
  for arg in "$@"; do
    case " ${names_all[*]} " in
      *" $arg "*) [[ " ${names_out[*]} " == *" $arg "* ]] || names_out+=("$arg") ;;
      *) usage ;;
    esac
  done
  (( ${#names_out[@]} > 0 )) || names_out=("${names_all[@]}")
}

# Raise the open-file limit to at least $1 (for the client's sockets and as
# many in the server), or die saying what needs it ($2).
need_nofile() {
  if (( $(ulimit -n) < $1 )); then
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    (( $(ulimit -n) >= $1 )) || die "open-file limit $(ulimit -n) is too low for $2"
  fi
}

# Run a copy of WSGATE_BIN from the temp dir, so that a rebuild during the
# run cannot give the rounds different binaries. Sets WSGATE_SRC_BIN and
# WSGATE_BUILT (the original and its modification time) for the report.
copy_wsgate_bin() {
  WSGATE_SRC_BIN=$WSGATE_BIN
  WSGATE_BUILT=$(date -r "$WSGATE_BIN" '+%Y-%m-%d %H:%M:%S')
  cp "$WSGATE_BIN" "$TMP_ROOT/wsgate"
  WSGATE_BIN=$TMP_ROOT/wsgate
  log "wsgate: $WSGATE_SRC_BIN (modified $WSGATE_BUILT), copied to $WSGATE_BIN"
}

# "median min max" of the numeric arguments ("null" entries skipped; the
# median of an even count is the mean of the middle two); "null null null"
# if there are none.
stats() {
  printf '%s\n' "$@" | grep -v '^null$' | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "null null null"; exit }
      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      print m, v[1], v[NR]
    }'
}
json_list() { local IFS=,; echo "[$*]"; }
# a / b to three decimals; null when either is null or b is 0.
ratio() {
  if [[ $1 == null || $2 == null ]]; then echo null
  else awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "null"; else printf "%.3f", a / b }'; fi
}
# Microseconds to milliseconds (null stays null).
us_to_ms() { awk -v x="$1" 'BEGIN { if (x == "null") print "null"; else print x / 1000 }'; }
# Median of VALS[$1], the script's space-separated per-round values (null if none).
median_of() { local -a v; read -ra v <<<"${VALS[$1]:-}"; local m; read -r m _ _ < <(stats "${v[@]}"); echo "$m"; }

# "noisy total" of the other% values on stdin (one or more a line): how
# many exceed NOISY_PCT, of how many.
count_noisy() {
  tr ' ' '\n' | awk -v lim="$NOISY_PCT" 'NF { n++; if ($1 > lim) k++ } END { print k + 0, n + 0 }'
}
noisy_warning() {
  (( $1 == 0 )) || echo "   WARNING: $1 of $2 runs had other% above $NOISY_PCT (other processes busy): noisy figures"
}

# ------------------------------------------------- bench/fanout.c runs ----
# The defaults of the fan-out tunables bench/fanout.sh and bench/cluster.sh
# both take (see bench/fanout.sh's header).
fanout_defaults() {
  FANOUT_SUBS=${FANOUT_SUBS:-10000}
  FANOUT_SIZE=${FANOUT_SIZE:-64}
  FANOUT_SECS=${FANOUT_SECS:-10}
  FANOUT_WINDOW=${FANOUT_WINDOW:-8}
  FANOUT_WARMUP_SECS=${FANOUT_WARMUP_SECS:-$WARMUP_SECS}
  FANOUT_SETUPS=${FANOUT_SETUPS:-200}
  FANOUT_MSG_TIMEOUT=${FANOUT_MSG_TIMEOUT:-10}
  FANOUT_BUSY_POLL=${FANOUT_BUSY_POLL:-1}
  FANOUT=${FANOUT:-/tmp/wsgate-bench-fanout}
}

# The number of subscribers fanout.c reports READY with in its output file
# $1, once it does (empty if it exits first or takes longer than its own
# set-up limits).
fanout_ready() {
  local ready=""
  for _ in $(seq 1 $(( (120 + 60 + 10) * 10 ))); do
    ready=$(sed -n 's/^READY \([0-9]*\) .*/\1/p' "$1")
    [[ -n $ready ]] && break
    alive "$LOAD_PID" || break
    sleep 0.1
  done
  echo "$ready"
}

# The JSON line of a phase ($1) in fanout.c's output file $2.
phase_line() { grep "^{.*\"phase\":\"$1\"" "$2" | tail -n 1 || true; }

# Check the phase's JSON line $2 of a run described as $1: $3 sockets open
# ("N of $3 $4" otherwise), nothing missing, failed or aborted. Each
# problem is logged as a WARNING; false if there was any.
fanout_phase_ok() {
  local what=$1 res=$2 expect=$3 open_words=$4 k m rc=0
  for k in open missing gave_up bad_frames bad_seq closed_by_server connect_fail errors; do
    m=$(jnum "$k" "$res")
    if [[ $k == open ]]; then
      [[ $m == "$expect" ]] || { log "WARNING: $what: $m of $expect $open_words"; rc=1; }
    elif [[ -z $m || $m != 0 ]]; then
      log "WARNING: $what: $k=$m"; rc=1
    fi
  done
  [[ $res == *'"aborted":false'* ]] || { log "WARNING: $what: aborted"; rc=1; }
  return "$rc"
}

# ------------------------------------------------------ bench/wssink.c ----
# The message count of the wssink (pid $1, stdout in file $2) now: SIGUSR1
# makes it print a COUNT line. Status 1 (nothing printed) when the sink is
# gone, 2 when it does not answer.
read_sink_count() {
  local pid=$1 out=$2 before n
  before=$(grep -c '^COUNT ' "$out" || true)
  kill -USR1 "$pid" 2>/dev/null || return 1
  for _ in $(seq 1 200); do
    n=$(grep -c '^COUNT ' "$out" || true)
    if (( n > before )); then
      grep '^COUNT ' "$out" | tail -n 1 | awk '{ print $2 }'
      return 0
    fi
    sleep 0.025
  done
  return 2
}
