#!/usr/bin/env bash
# Side-by-side harness: wsgate vs nginx + lua-nginx-websocket, the same
# workloads in alternating rounds of one run, reported as medians and as
# ratios of medians.
#
# Usage: bench/compare.sh [WORKLOAD...]        (default: all of them)
#
# Workloads (the arguments):
#   echo64-p1    ECHO_CONNS (100) connections x 64-byte text messages, 1 in
#                flight per connection, ECHO_SECS (10) s (or SLICE_SECS) -> msgs/s
#   echo64-p16   the same with 16 in flight                       -> msgs/s
#   bin16k       BIG_CONNS (50) connections x 16384-byte binary messages,
#                1 in flight, ECHO_SECS s                         -> msgs/s
#   text16k      the same with text messages                      -> msgs/s
#   handshake    wsload -m churn, CHURN_INFLIGHT (50) cycles in flight for
#                CHURN_SECS (10) s; one cycle = TCP connect, upgrade, close
#                handshake, close                  -> cycles/s, and the
#                server's CPU time per cycle (us, the drain after the window
#                included, over every completed cycle; as in run.sh)
#   idle         IDLE_CONNS (10,000) idle connections whose upgrade requests
#                carry a browser's headers (wsload -B)  -> bytes per
#                connection, RSS of the whole process tree (nginx: master +
#                worker) while holding them minus before (measure_idle)
#
# Servers: wsgate (WSGATE_BIN, default .build/release/wsgate) and nginx
# (bench/nginx/nginx.conf, worker_processes 1), plus, when WSGATE_BASE_BIN
# names a second wsgate binary, that one as "wsgate-base" (a before/after
# comparison within the same run), and, with CECHO=1, "cecho": bench/cecho.c,
# a WebSocket echo in plain C (one thread, epoll, no scripting, no UTF-8
# check), the floor the kernel sets on this machine for every server; it
# runs every workload but idle. Each server is pinned to SERVER_CPU (0), the
# load generator to LOAD_CPU (1).
#
# ROUNDS (5) rounds; in each round, for each workload, each server in turn
# gets a fresh process (start_server in bench/lib.sh, its own temp dir and
# port), an unreported warm-up of WARMUP_SECS (2) s (echo workloads: the
# same load; handshake: churn; idle: a 64-byte echo, so that the baseline is
# a warmed-up server as in run.sh), the measurement, then stop_server. The
# order alternates: wsgate first on odd rounds, nginx first on even ones
# (with wsgate-base in the middle).
#
# PAIRED=1 runs the echo workloads differently: each server is started once
# (all pinned to SERVER_CPU, each on its own port) and warmed up, then each
# of ROUNDS rounds gives every server in turn SLICE_SECS (3) s of the load
# while the others sit idle, in the same alternating order. Within a round
# the servers are measured seconds apart, so a slow phase of the host (this
# KVM guest has them, lasting tens of seconds, and they slow every server,
# the plain C echo included) lands on all of them instead of on one
# server's fresh-process rounds. Handshake and idle always get a fresh
# process per measurement: their state is what they measure.
#
# Before every throughput run the script
# waits for a quiet machine (wait_quiet); every run records the server's CPU
# use (% of one core) and "other%", the CPU used meanwhile by unrelated
# processes (see foreign_pct in bench/lib.sh): large values mean noisy
# figures.
#
# At the end: one table (workload | metric | better | server | median |
# min-max | ratio of medians vs nginx | vs wsgate-base | vs cecho | check | per-round
# values | server cpu% and other% per round) and one JSON line per workload.
# Ratios are always this server's median over nginx's (or wsgate's over
# wsgate-base's), whatever the direction: for B/conn and server us/cycle
# lower is better, so there a ratio below 1 favours wsgate. Under the table,
# for each server but nginx, the ratios round by round (this server's value
# over nginx's in the same round): their median and quartiles, which keep
# less of the machine's drift than the ratio of the medians (in the JSON:
# round_ratio_vs_nginx; "paired" says how the rounds ran). Runs whose
# other% exceeds NOISY_PCT (10) are counted in a warning under the table.
# Exit status is non-zero if any load-generator run reported errors, failed
# connections or wrong echoes.
#
# Tunables (environment): ROUNDS, ECHO_SECS, ECHO_CONNS, BIG_CONNS,
# BIG_SIZE (16384), CHURN_SECS, CHURN_INFLIGHT, WARMUP_SECS, IDLE_CONNS,
# IDLE_SRCS, IDLE_HOLD_SECS, WSGATE_BIN, WSGATE_BASE_BIN, CECHO, PAIRED,
# SLICE_SECS, WSGATE_HOST, WSLOAD, SERVER_CPU, LOAD_CPU, QUIET_WAIT_SECS,
# QUIET_BUSY_PCT, NOISY_PCT, KEEP_TMP=1 (keep logs). Examples, a short try
# and the paired echoes:
#   ROUNDS=2 ECHO_SECS=3 CHURN_SECS=3 IDLE_CONNS=2000 bench/compare.sh echo64-p1 idle
#   PAIRED=1 ROUNDS=20 CECHO=1 bench/compare.sh echo64-p1 echo64-p16 bin16k text16k
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

ROUNDS=${ROUNDS:-5}
BIG_CONNS=${BIG_CONNS:-50}
BIG_SIZE=${BIG_SIZE:-16384}
CHURN_SECS=${CHURN_SECS:-10}
CHURN_INFLIGHT=${CHURN_INFLIGHT:-50}
WSGATE_BASE_BIN=${WSGATE_BASE_BIN:-}
CECHO=${CECHO:-0}
PAIRED=${PAIRED:-0}
SLICE_SECS=${SLICE_SECS:-3}
CECHO_BIN=/tmp/wsgate-bench-cecho
NOISY_PCT=${NOISY_PCT:-10}     # other% above this marks a run as noisy in the summary

ALL_WORKLOADS=(echo64-p1 echo64-p16 bin16k text16k handshake idle)

usage() { echo "usage: $0 [WORKLOAD...]   (workloads: ${ALL_WORKLOADS[*]}; default all)" >&2; exit 2; }

declare -a WORKLOADS=()
pick_names ALL_WORKLOADS WORKLOADS "$@"
need_positive ROUNDS SLICE_SECS
[[ $PAIRED == 0 || $PAIRED == 1 ]] || die "PAIRED must be 0 or 1: $PAIRED"

# The temp dir becomes the working directory: binaries named relatively must
# be resolved first.
[[ -e $WSGATE_BIN ]] && WSGATE_BIN=$(readlink -f "$WSGATE_BIN")
if [[ -n $WSGATE_BASE_BIN ]]; then
  [[ -x $WSGATE_BASE_BIN ]] || die "WSGATE_BASE_BIN is not an executable: $WSGATE_BASE_BIN"
  WSGATE_BASE_BIN=$(readlink -f "$WSGATE_BASE_BIN")
  SHOWN=(wsgate wsgate-base nginx)
else
  SHOWN=(wsgate nginx)
fi
[[ $CECHO == 0 || $CECHO == 1 ]] || die "CECHO must be 0 or 1: $CECHO"
[[ $CECHO == 1 ]] && SHOWN=("${SHOWN[@]:0:${#SHOWN[@]}-1}" cecho nginx)

# check_prereqs knows wsgate and nginx; wsgate-base was checked above.
SERVERS=(wsgate nginx)

bench_init

# wsgate-base is started exactly like wsgate (start_server calls start_$name).
start_wsgate-base() {
  local WSGATE_BIN=$WSGATE_BASE_BIN
  start_wsgate "$@"
}

start_cecho() {
  SERVER_LOG=$1/cecho.log
  taskset -c "$SERVER_CPU" "$CECHO_BIN" -p "$2" >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
}

# Those of servers $2... that run workload $1: cecho keeps a 64 KiB input
# buffer per socket, no floor for idle memory.
running() {
  local w=$1 s
  shift
  for s; do [[ $s == cecho && $w == idle ]] || echo "$s"; done
}

# Server order of round $1: SHOWN on odd rounds, reversed on even ones.
round_order() {
  local i
  if (( $1 % 2 == 1 )); then
    echo "${SHOWN[@]}"
  else
    for (( i = ${#SHOWN[@]} - 1; i >= 0; i-- )); do printf '%s ' "${SHOWN[$i]}"; done
    echo
  fi
}

# ---------------------------------------------------------- workloads ----
# The load generator's arguments for workload $1, minus -d and the URL, in
# WL_ARGS; WL_CONNS is the number of connections expected open.
workload_args() {
  case "$1" in
    echo64-p1) WL_ARGS=(-m echo -c "$ECHO_CONNS" -s 64 -p 1); WL_CONNS=$ECHO_CONNS ;;
    echo64-p16) WL_ARGS=(-m echo -c "$ECHO_CONNS" -s 64 -p 16); WL_CONNS=$ECHO_CONNS ;;
    bin16k) WL_ARGS=(-m echo -c "$BIG_CONNS" -s "$BIG_SIZE" -b -p 1); WL_CONNS=$BIG_CONNS ;;
    text16k) WL_ARGS=(-m echo -c "$BIG_CONNS" -s "$BIG_SIZE" -p 1); WL_CONNS=$BIG_CONNS ;;
    handshake) WL_ARGS=(-m churn -c "$CHURN_INFLIGHT" -S "$IDLE_SRCS"); WL_CONNS=0 ;;
    idle) WL_ARGS=(-m idle -c "$IDLE_CONNS" -S "$IDLE_SRCS" -B); WL_CONNS=$IDLE_CONNS ;;
  esac
}

# The workload's parameters, as a JSON object.
workload_params() {
  local secs=$ECHO_SECS
  paired "$1" && secs=$SLICE_SECS
  case "$1" in
    echo64-p1|echo64-p16)
      echo "{\"conns\":$ECHO_CONNS,\"size\":64,\"depth\":${1#echo64-p},\"binary\":false,\"secs\":$secs}" ;;
    bin16k|text16k)
      local bin=false; [[ $1 == bin16k ]] && bin=true
      echo "{\"conns\":$BIG_CONNS,\"size\":$BIG_SIZE,\"depth\":1,\"binary\":$bin,\"secs\":$secs}" ;;
    handshake) echo "{\"inflight\":$CHURN_INFLIGHT,\"secs\":$CHURN_SECS}" ;;
    idle) echo "{\"conns\":$IDLE_CONNS,\"browser_headers\":true,\"hold_secs\":$IDLE_HOLD_SECS}" ;;
  esac
}

# Metrics of a workload (the first is the headline), and per metric its unit,
# which direction is better and how its values are printed.
workload_metrics() {
  case "$1" in
    handshake) echo "cycles_per_s server_us_per_cycle" ;;
    idle) echo "bytes_per_conn" ;;
    *) echo "msgs_per_s" ;;
  esac
}
metric_unit() {
  case "$1" in
    msgs_per_s) echo "msgs/s" ;;
    cycles_per_s) echo "cycles/s" ;;
    server_us_per_cycle) echo "srv us/cycle" ;;
    bytes_per_conn) echo "B/conn" ;;
  esac
}
metric_better() { case "$1" in server_us_per_cycle|bytes_per_conn) echo lower ;; *) echo higher ;; esac; }
metric_fmt() { case "$1" in server_us_per_cycle) echo "%.1f" ;; *) echo "%.0f" ;; esac; }

# Results, keyed "WORKLOAD SERVER" (and metric): space-separated, one entry
# per round.
declare -A VALS=() CPUS=() OTHERS=() FAILS=()

# Idle memory with the CPU bookkeeping measured_run does for the throughput
# runs (server cpu% and other% over the whole measurement, the settle waits
# included). Sets RUN_SRV_PCT and RUN_OTHER_PCT.
measured_idle() {
  cpu_watch_start
  measure_idle "$1" "$2" browser -B
  cpu_watch_stop
}

# One measurement: fresh server NAME, warm-up, workload W, stop. Appends to
# VALS, CPUS, OTHERS and FAILS.
bench_one() {
  local round=$1 w=$2 name=$3 dir port url res ok=ok summary
  dir=$TMP_ROOT/r$round-$w-$name; mkdir -p "$dir"; chmod 755 "$dir"
  port=$(free_port)
  url="ws://127.0.0.1:$port/echo"
  workload_args "$w"

  start_server "$name" "$dir" "$port"
  local -a v=()
  case "$w" in
    handshake)
      log "$name: churn warm-up ${WARMUP_SECS}s"
      run_load "${WL_ARGS[@]}" -d "$WARMUP_SECS" "$url" >"$dir/warm.json"
      log "round $round/$ROUNDS, $w, $name: churn -c $CHURN_INFLIGHT -d $CHURN_SECS"
      measured_run "$dir/run.json" "${WL_ARGS[@]}" -d "$CHURN_SECS" "$url"
      res=$RUN_RES
      log "  $res"
      local rate total errs cfail us
      rate=$(jnum handshakes_per_s "$res"); total=$(jnum cycles_total "$res")
      errs=$(jnum errors "$res"); cfail=$(jnum connect_fail "$res")
      if [[ -z $rate || -z $total || $total == 0 || $errs != 0 || $cfail != 0 ]]; then
        log "WARNING: $name churn: cycles=$total errors=$errs connect_fail=$cfail"
        ok=FAIL; FAILED=1
      fi
      us=$(awk -v t="$RUN_SRV_TICKS" -v hz="$CLK_TCK" -v n="${total:-0}" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "null" }')
      v=("${rate:-null}" "$us")
      summary="${rate:-?} cycles/s, $us us/cycle"
      ;;
    idle)
      echo_warmup "$url" "$dir"
      log "round $round/$ROUNDS, $w, $name: $IDLE_CONNS idle connections, browser headers"
      measured_idle "$url" "$dir"
      ok=$IDLE_OK
      v=("$IDLE_PER_CONN")
      summary="$IDLE_PER_CONN B/conn ($IDLE_BASE_TOTAL -> $IDLE_TOTAL KiB, $IDLE_OPEN open)"
      ;;
    *)
      echo_workload_warmup "$w" "$name" "$url" "$dir"
      measure_echo_workload "$round" "$w" "$name" "$url" "$dir" "$ECHO_SECS"
      stop_server
      return
      ;;
  esac
  stop_server
  record "$round" "$w" "$name" "$ok" "$summary" "${v[@]}"
}

# Unreported warm-up of echo workload $1 on server $2 at URL $3 (files in $4).
echo_workload_warmup() {
  local w=$1 name=$2 url=$3 dir=$4
  log "$name: warm-up ${WARMUP_SECS}s"
  run_load "${WL_ARGS[@]}" -d "$WARMUP_SECS" "$url" >"$dir/warm.json"
  check_result "$w warm-up" "$(cat "$dir/warm.json")" "$WL_CONNS" || true
}

# One measurement of echo workload W (WL_ARGS set) on the running server
# SERVER_PID, recorded. Usage: measure_echo_workload ROUND W NAME URL DIR SECS
measure_echo_workload() {
  local round=$1 w=$2 name=$3 url=$4 dir=$5 secs=$6 res ok=ok msgs
  log "round $round/$ROUNDS, $w, $name: ${WL_ARGS[*]} -d $secs"
  measured_run "$dir/run-$round.json" "${WL_ARGS[@]}" -d "$secs" "$url"
  res=$RUN_RES
  log "  $res"
  check_result "$w" "$res" "$WL_CONNS" || ok=FAIL
  msgs=$(jval msgs_per_s "$res")
  record "$round" "$w" "$name" "$ok" "$msgs msgs/s" "$msgs"
}

# Appends a measurement to VALS (one value per metric of the workload), CPUS,
# OTHERS and FAILS. Usage: record ROUND W NAME OK SUMMARY VALUE...
record() {
  local round=$1 w=$2 name=$3 ok=$4 summary=$5 m i=0
  shift 5
  local -a v=("$@")
  for m in $(workload_metrics "$w"); do
    VALS["$w $m $name"]+="${v[$i]} "
    i=$(( i + 1 ))
  done
  CPUS["$w $name"]+="$RUN_SRV_PCT "
  OTHERS["$w $name"]+="$RUN_OTHER_PCT "
  [[ $ok == ok ]] || FAILS["$w $name"]=$(( ${FAILS["$w $name"]:-0} + 1 ))
  log "round $round/$ROUNDS, $w, $name: $summary, server cpu ${RUN_SRV_PCT}%, other ${RUN_OTHER_PCT}%, $ok"
}

# Whether workload $1 runs in paired slices (PAIRED=1; echo workloads only).
paired() { [[ $PAIRED == 1 && $1 != handshake && $1 != idle ]]; }

# PAIRED=1, an echo workload: every server is started once, pinned to the
# same core, and warmed up; then each round gives each server in turn
# SLICE_SECS of load while the others sit idle. Servers whose slices lie
# seconds apart see the same state of the machine, which a fresh process per
# 10-s measurement does not (a slow phase of the host then lands on one
# server's rounds only).
paired_workload() {
  local w=$1 s round dir port
  local -A url=() wdir=() pid=()
  workload_args "$w"
  for s in "${SHOWN[@]}"; do
    dir=$TMP_ROOT/paired-$w-$s; mkdir -p "$dir"; chmod 755 "$dir"
    port=$(free_port)
    url[$s]="ws://127.0.0.1:$port/echo"; wdir[$s]=$dir
    start_server "$s" "$dir" "$port"
    pid[$s]=$SERVER_PID
    keep_server
  done
  for s in "${SHOWN[@]}"; do
    SERVER_NAME=$s SERVER_PID=${pid[$s]}
    echo_workload_warmup "$w" "$s" "${url[$s]}" "${wdir[$s]}"
  done
  SERVER_PID=""
  for (( round = 1; round <= ROUNDS; round++ )); do
    for s in $(round_order "$round"); do
      # Measured as SERVER_PID (whose CPU measured_run counts), still kept.
      SERVER_NAME=$s SERVER_PID=${pid[$s]}
      alive "$SERVER_PID" || die "$s exited during the paired rounds (log: ${wdir[$s]})"
      measure_echo_workload "$round" "$w" "$s" "${url[$s]}" "${wdir[$s]}" "$SLICE_SECS"
    done
  done
  SERVER_PID=""
  stop_kept_servers
}

# ------------------------------------------------------------ summary ----
# (stats, ratio and json_list are lib.sh's.)
fmt() {
  if [[ $2 == null ]]; then echo null; else awk -v f="$1" -v x="$2" 'BEGIN { printf f, x }'; fi
}

# "median q1 q3" of the per-round ratios of two servers' values ($1 over $2,
# space-separated lists of the same rounds; rounds with a null skipped;
# quartiles by nearest rank), "null null null" if there are none. Rounds run
# minutes apart for one server but seconds apart within a round, so these
# ratios keep less of the machine's drift than the ratio of the medians.
round_ratios() {
  paste -d' ' <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) \
    | awk '$1 != "null" && $2 != "null" && $2 + 0 > 0 { printf "%.6f\n", $1 / $2 }' | sort -g | awk '
      { v[NR] = $1 }
      END {
        if (NR == 0) { print "null null null"; exit }
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        q1 = int(NR / 4 + 0.75); q3 = int(3 * NR / 4 + 0.75)
        if (q1 < 1) q1 = 1
        printf "%.3f %.3f %.3f\n", m, v[q1], v[q3]
      }'
}

report() {
  local w m s first med mn mx rv rb rc cpus others chk
  local -a vals
  local -A median=()
  echo
  local how="a fresh server per measurement"
  [[ $PAIRED == 1 ]] && how="echo workloads paired: each server started once, ${SLICE_SECS}s slices; handshake and idle: a fresh server per measurement"
  echo "== wsgate vs nginx, rounds: $ROUNDS ($how; order alternating, odd rounds: ${SHOWN[*]})"
  echo "   server cpu $SERVER_CPU, load cpu $LOAD_CPU; echo ${ECHO_SECS}s, churn ${CHURN_SECS}s x $CHURN_INFLIGHT in flight, idle $IDLE_CONNS conns (browser headers), warm-up ${WARMUP_SECS}s"
  echo "   wsgate:      $WSGATE_BIN"
  [[ -n $WSGATE_BASE_BIN ]] && echo "   wsgate-base: $WSGATE_BASE_BIN"
  [[ $CECHO == 1 ]] && echo "   cecho:       bench/cecho.c (plain C echo: the kernel's floor; not run for idle)"
  echo "   nginx:       $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //') + lua-nginx-websocket (bench/nginx)"
  echo "   ratios: median / nginx's median (ratio/base: wsgate's / wsgate-base's; ratio/cecho: wsgate's / cecho's); 'better' says which direction wins"
  printf '%-11s %-13s %-6s %-12s %10s %-21s %11s %10s %11s %-7s %s | %s | %s\n' workload metric better server median "min-max" \
    "ratio/nginx" "ratio/base" "ratio/cecho" check "per round" "srv cpu% per round" "other% per round"
  for w in "${WORKLOADS[@]}"; do
    first=1
    for m in $(workload_metrics "$w"); do
      median=()
      for s in $(running "$w" "${SHOWN[@]}"); do
        read -ra vals <<<"${VALS["$w $m $s"]}"
        read -r med _ _ < <(stats "${vals[@]}")
        median[$s]=$med
      done
      for s in $(running "$w" "${SHOWN[@]}"); do
        read -ra vals <<<"${VALS["$w $m $s"]}"
        read -r med mn mx < <(stats "${vals[@]}")
        rv=-; rb=-; rc=-
        [[ $s != nginx ]] && rv=$(ratio "$med" "${median[nginx]}")
        [[ $s == wsgate && -n $WSGATE_BASE_BIN ]] && rb=$(ratio "$med" "${median[wsgate-base]}")
        [[ $s == wsgate && -n ${median[cecho]:-} ]] && rc=$(ratio "$med" "${median[cecho]}")
        chk=ok; [[ -n ${FAILS["$w $s"]:-} ]] && chk="FAIL(${FAILS["$w $s"]})"
        cpus=""; others=""
        if [[ $first == 1 ]]; then cpus=${CPUS["$w $s"]% }; others=${OTHERS["$w $s"]% }; fi
        printf '%-11s %-13s %-6s %-12s %10s %-21s %11s %10s %11s %-7s %s | %s | %s\n' "$w" "$(metric_unit "$m")" \
          "$(metric_better "$m")" "$s" "$(fmt "$(metric_fmt "$m")" "$med")" \
          "$(fmt "$(metric_fmt "$m")" "$mn")-$(fmt "$(metric_fmt "$m")" "$mx")" "$rv" "$rb" "$rc" "$chk" \
          "${vals[*]}" "$cpus" "$others"
      done
      first=0
    done
  done

  echo "   (B/conn and srv us/cycle: lower is better, so there a ratio below 1 favours the row's server)"
  local q1 q3 a b
  for w in "${WORKLOADS[@]}"; do
    for m in $(workload_metrics "$w"); do
      for s in $(running "$w" "${SHOWN[@]}"); do
        [[ $s == nginx ]] && continue
        read -r med q1 q3 < <(round_ratios "${VALS["$w $m $s"]}" "${VALS["$w $m nginx"]}")
        echo "   $w $(metric_unit "$m"), $s / nginx round by round: median $med, quartiles $q1-$q3"
      done
    done
  done
  local noisy total
  read -r noisy total < <(printf '%s\n' "${OTHERS[@]}" | count_noisy)
  noisy_warning "$noisy" "$total"

  echo
  local line mj rn rbj
  for w in "${WORKLOADS[@]}"; do
    mj=""
    for m in $(workload_metrics "$w"); do
      local sj=""
      median=()
      for s in $(running "$w" "${SHOWN[@]}"); do
        read -ra vals <<<"${VALS["$w $m $s"]}"
        read -r med mn mx < <(stats "${vals[@]}")
        median[$s]=$med
        sj+=",\"$s\":{\"median\":$med,\"min\":$mn,\"max\":$mx,\"values\":$(json_list "${vals[@]}")}"
      done
      rn=""; rbj=""
      local rr="" q1 q3 rm
      for s in $(running "$w" "${SHOWN[@]}"); do
        [[ $s == nginx ]] && continue
        rn+="${rn:+,}\"$s\":$(ratio "${median[$s]}" "${median[nginx]}")"
        read -r rm q1 q3 < <(round_ratios "${VALS["$w $m $s"]}" "${VALS["$w $m nginx"]}")
        rr+="${rr:+,}\"$s\":{\"median\":$rm,\"q1\":$q1,\"q3\":$q3}"
      done
      [[ -n $WSGATE_BASE_BIN ]] && rbj=",\"ratio_vs_base\":{\"wsgate\":$(ratio "${median[wsgate]}" "${median[wsgate-base]}")}"
      [[ -n ${median[cecho]:-} ]] && rbj+=",\"ratio_vs_cecho\":{\"wsgate\":$(ratio "${median[wsgate]}" "${median[cecho]}")}"
      mj+="${mj:+,}\"$m\":{\"better\":\"$(metric_better "$m")\"$sj,\"ratio_vs_nginx\":{$rn},\"round_ratio_vs_nginx\":{$rr}$rbj}"
    done
    local cj="" oj="" fj=""
    for s in $(running "$w" "${SHOWN[@]}"); do
      read -ra vals <<<"${CPUS["$w $s"]}"; cj+="${cj:+,}\"$s\":$(json_list "${vals[@]}")"
      read -ra vals <<<"${OTHERS["$w $s"]}"; oj+="${oj:+,}\"$s\":$(json_list "${vals[@]}")"
      fj+="${fj:+,}\"$s\":${FAILS["$w $s"]:-0}"
    done
    line="{\"workload\":\"$w\",\"rounds\":$ROUNDS,\"paired\":$(paired "$w" && echo true || echo false),\"params\":$(workload_params "$w"),\"metrics\":{$mj},\"server_cpu_pct\":{$cj},\"other_cpu_pct\":{$oj},\"failed_runs\":{$fj}}"
    echo "$line"
  done
}

# ---------------------------------------------------------------- main ----
# shellcheck disable=SC2119  # over ws:// no tool beyond the common ones
check_prereqs
build_loadgen
[[ $CECHO == 1 ]] && build_c_tool "$BENCH_DIR/cecho.c" "$CECHO_BIN" -lcrypto
raise_nofile

declare -a FRESH=()
for w in "${WORKLOADS[@]}"; do
  if paired "$w"; then paired_workload "$w"; else FRESH+=("$w"); fi
done
if (( ${#FRESH[@]} > 0 )); then
  for (( round = 1; round <= ROUNDS; round++ )); do
    order=$(round_order "$round")
    log "== round $round/$ROUNDS: $order"
    for w in "${FRESH[@]}"; do
      # shellcheck disable=SC2086  # order: server names, one word each
      for s in $(running "$w" $order); do
        bench_one "$round" "$w" "$s"
      done
    done
  done
fi

report
if [[ $FAILED != 0 ]]; then
  log "some runs reported errors (see warnings above)"
  exit 1
fi
