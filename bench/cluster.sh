#!/usr/bin/env bash
# Two wsgate nodes and a Redis (README, "Running several nodes"): what does
# going through the cluster cost, next to the same work on one node, in
# alternating rounds of one run?
#
# Usage: bench/cluster.sh [WORKLOAD...]   (send, fanout; default both)
#
# Processes, each started afresh for every run, on free ports of 127.0.0.1:
#   redis       REDIS_SERVER (redis-server) --save "" --appendonly no,
#               pinned to REDIS_CPU
#   node a, b   WSGATE_BIN (default .build/release/wsgate, copied into the
#               temp dir at the start, so that a rebuild during the run cannot
#               give the rounds different binaries), --workers 1, pinned to
#               NODE_A_CPU / NODE_B_CPU, config
#                 {"rateLimit": {"messagesPerSecond": 0},
#                  "limits": {"maxConnections": FANOUT_SUBS + 1000},
#                  "metrics": {"public": true},
#                  "cluster": {"redis": "redis://127.0.0.1:PORT",
#                              "nodeId": "na" | "nb", "requestTimeoutMs": 1000}}
#               and an endpoints folder (in the temp dir) holding
#                 sink.lua   on "open": websocketInfo.send(websocketInfo.socket_id)
#                 relay.lua  on "data": Websocket.send{socket_id =
#                            websocketInfo.parameters.to (the query parameter),
#                            message = websocketInfo.message}; an error
#                            object is printed to the log ("relay: ...")
#                 sub.lua, pub.lua  as bench/fanout.sh writes them (subscribe
#                            on "open" to "bench", publish each message),
#                            pub.lua with wait = PUBLISH_WAIT (false: the
#                            call does not wait for the other nodes'
#                            counts, so one publisher pipelines; true: it
#                            does, one Redis round trip per message)
#               With two nodes, a run starts only once each node's /metrics
#               says wsgate_cluster_nodes 2.
# Pinning (2 cores): by default SERVER_CPU (0) holds both nodes AND Redis,
# LOAD_CPU (1) the client, which busy-polls. So the one-node and two-node
# runs get the same single core for all server-side work, as bench/fanout.sh
# gives its one server: a two-node figure is what the cluster path costs at
# equal CPU, not what two machines would do. Each process's CPU is read per
# phase (from /proc); "core%" is how busy the servers kept a node's core
# (near 100: bound by CPU; well below: waiting), and "per node CPU-second"
# divides a node's deliveries by its own CPU time: what that node would
# deliver with a core to itself IF it stayed bound by CPU, an upper bound
# for the "per node" goal below. NODE_B_CPU=1 REDIS_CPU=1
# FANOUT_BUSY_POLL=0 gives each node a core of its own instead (node b and
# Redis then share theirs with the client, which must not spin).
#
# Workloads (bench/fanout.c, built with build_c_tool, pinned to LOAD_CPU):
#   send    SEND_PAIRS (10) pairs with fanout -R: a receiver connects to
#           /sink, reads its socket id, then its sender connects to
#           /relay?to=<id>; each sender's SEND_SIZE (64) byte text messages
#           are checked on its receiver (sequence, send time, padding).
#           Runs: "local" (both sockets on node a; both nodes up) and
#           "cross-node" (receiver on node b: every message is a PUBLISH to
#           b's channel and an answer back through Redis, README: two Redis
#           commands per call), "cross nowait" (the same through
#           relay-nowait.lua: send{wait = false}, one PUBLISH and no answer). Phases of SEND_SECS (10) s after
#           SEND_WARMUP_SECS (2) s: latency = 1 message in flight per pair
#           (p50/p99/p99.9 of send -> receipt, us), throughput =
#           SEND_WINDOW (16) in flight per pair (msgs/s over all pairs).
#   fanout  FANOUT_SUBS (10000) subscribers, one publisher on node a, as
#           bench/fanout.sh (FANOUT_SIZE 64, FANOUT_WINDOW 8, FANOUT_SECS 10,
#           FANOUT_WARMUP_SECS 2, FANOUT_SETUPS, FANOUT_MSG_TIMEOUT). Runs:
#           "1 node" (node a alone, no "cluster" in its config: the gateway
#           as bench/fanout.sh runs it), "1 node+redis" (node a alone in a
#           cluster: each publish also goes to Redis, and with PUBLISH_WAIT
#           the publishing run waits for the answers), "2 nodes" (subscribers round robin over
#           a and b, 5,000 each; a's publication reaches b through Redis).
# FANOUT_BUSY_POLL (1) makes the client spin in the phases (see
# bench/fanout.sh). Every frame is validated; a missing delivery, a bad
# frame or a failed connection fails the run.
#
# ROUNDS (3) rounds; each workload's runs rotate (round 1: local,
# cross-node; round 2: cross-node, local; ...); the machine must be quiet
# before each run (wait_quiet); "other%" is the CPU of unrelated processes
# over the run (foreign_pct in bench/lib.sh), a run above NOISY_PCT (10) is
# counted as noisy under the table.
#
# How to read it: medians of the rounds (min-max and per-round values
# beside). send: msgs/s over all pairs, p50/p99/p99.9 in us, each
# process's CPU% in the phase, then ratios cross-node/local (msgs/s: below
# 1 is the cost of the cluster; latency: above 1) and the goal, cross-node
# p99 with one message in flight under 5 ms on loopback. fanout:
# deliveries/s (all subscribers), by node, publish -> last subscriber
# p50/p99 (ms), each process's CPU%, core%, deliveries per node
# CPU-second, then ratios 2 nodes / 1 node (and / 1 node+redis): of the
# totals, of each node's deliveries/s, and of the deliveries per node
# CPU-second (each node's, and both nodes' deliveries over both nodes' CPU);
# and the goal (at least 0.8 of the one-node rate per node), judged on
# both nodes' deliveries per CPU-second in the throughput phase over one
# node's, which is what a node would deliver with a core of its own if
# bound by CPU: met when >= 0.8 and the nodes were bound by CPU (core% >=
# 90). Node by node, the split of that CPU follows the scheduler: the node
# that falls behind on the shared core batches several messages into each
# subscriber's send(2), the other does not (measured: 24% more send calls
# on the node that kept up, for the same deliveries).
# WARN and ERROR lines of the nodes' logs, "relay:" lines, and non-zero
# wsgate_cluster_errors_total after a run are shown under the tables. The
# tables and one JSON line at the end; exit status non-zero if a run failed.
#
# Tunables (environment): SEND_PAIRS, SEND_SIZE, SEND_WINDOW (1..64),
# SEND_SECS, SEND_WARMUP_SECS, FANOUT_SUBS, FANOUT_SIZE, FANOUT_WINDOW,
# FANOUT_SECS, FANOUT_WARMUP_SECS, FANOUT_SETUPS, FANOUT_MSG_TIMEOUT,
# FANOUT_BUSY_POLL, PUBLISH_WAIT, ROUNDS, NOISY_PCT, FANOUT (where bench/fanout.c is
# built, default /tmp/wsgate-bench-fanout), WSGATE_BIN, REDIS_SERVER,
# SERVER_CPU, NODE_A_CPU, NODE_B_CPU, REDIS_CPU, LOAD_CPU, QUIET_WAIT_SECS,
# QUIET_BUSY_PCT, KEEP_TMP=1 (keep logs). A short try:
#   SEND_SECS=3 FANOUT_SUBS=1000 FANOUT_SECS=3 ROUNDS=1 bench/cluster.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

SEND_PAIRS=${SEND_PAIRS:-10}
SEND_SIZE=${SEND_SIZE:-64}
SEND_WINDOW=${SEND_WINDOW:-16}
SEND_SECS=${SEND_SECS:-10}
SEND_WARMUP_SECS=${SEND_WARMUP_SECS:-$WARMUP_SECS}
fanout_defaults   # FANOUT_SUBS ... FANOUT_BUSY_POLL, FANOUT
PUBLISH_WAIT=${PUBLISH_WAIT:-false}
ROUNDS=${ROUNDS:-3}
NOISY_PCT=${NOISY_PCT:-10}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
NODE_A_CPU=${NODE_A_CPU:-$SERVER_CPU}
NODE_B_CPU=${NODE_B_CPU:-$SERVER_CPU}
REDIS_CPU=${REDIS_CPU:-$SERVER_CPU}
ALL_WORKLOADS=(send fanout)

usage() { echo "usage: $0 [WORKLOAD...]   (workloads: ${ALL_WORKLOADS[*]}; default both; see the header comment for the tunables)" >&2; exit 2; }
declare -a SHOWN=()
pick_names ALL_WORKLOADS SHOWN "$@"
need_positive SEND_PAIRS SEND_SECS SEND_WINDOW FANOUT_SUBS FANOUT_SECS FANOUT_WINDOW FANOUT_SETUPS FANOUT_MSG_TIMEOUT ROUNDS
[[ $PUBLISH_WAIT == true || $PUBLISH_WAIT == false ]] || die "PUBLISH_WAIT must be true or false"
need_nonnegative SEND_WARMUP_SECS FANOUT_WARMUP_SECS
need_msg_size SEND_SIZE FANOUT_SIZE
(( SEND_WINDOW <= 64 && FANOUT_WINDOW <= 64 )) || die "SEND_WINDOW and FANOUT_WINDOW must be 1..64"
(( SEND_PAIRS <= 1000 )) || die "SEND_PAIRS must be 1..1000"
[[ $FANOUT_BUSY_POLL == 0 || $FANOUT_BUSY_POLL == 1 ]] || die "FANOUT_BUSY_POLL must be 0 or 1"

# The temp dir becomes the working directory: binaries named relatively must
# be resolved first.
[[ -e $WSGATE_BIN ]] && WSGATE_BIN=$(readlink -f "$WSGATE_BIN")
SERVERS=(wsgate)
bench_init

# ------------------------------------------------------------- helpers ----
# (stats, ratio, json_list, us_to_ms, median_of, phase_line and the like are lib.sh's.)
fmt() {
  if [[ $2 == null || -z $2 ]]; then echo "-"; else awk -v f="$1" -v x="$2" 'BEGIN { printf f, x }'; fi
}
# a / b * c, null when either is null or b is 0.
per() { awk -v a="$1" -v b="$2" -v c="${3:-1}" 'BEGIN { if (a == "null" || b == "null" || b + 0 == 0) print "null"; else printf "%.0f", a / b * c }'; }
# Element $3 (from 0) of the array field $1 of the JSON line $2, or null.
jarr() {
  local v
  v=$(sed -n "s/.*\"$1\":\\[\\([^]]*\\)\\].*/\\1/p" <<<"$2" | awk -F, -v i="$3" '{ if (i + 1 <= NF) print $(i + 1) }')
  echo "${v:-null}"
}

# ------------------------------------------------------------ processes ----
# Pids and logs of what a run started, by name: a, b (nodes), redis.
declare -A PIDS=() LOGS=() PORTS=()

# A Redis of our own, in the foreground of its own process (its pid is ours
# to stop), pinned, no persistence.
start_redis() {
  local dir=$1 port
  port=$(free_port)
  LOGS[redis]=$dir/redis.log
  (cd "$dir" && exec taskset -c "$REDIS_CPU" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" \
       --appendonly no --daemonize no --logfile "") >"${LOGS[redis]}" 2>&1 &
  PIDS[redis]=$!
  PORTS[redis]=$port
  local line=""
  for _ in $(seq 1 100); do
    alive "${PIDS[redis]}" || die "redis-server exited during startup: $(tail -n 5 "${LOGS[redis]}")"
    line=$( { exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'PING\r\n' >&3 && read -r -t 1 l <&3 && echo "$l"; } 2>/dev/null || true)
    [[ $line == +PONG* ]] && return 0
    sleep 0.1
  done
  die "redis-server not answering PING on port $port after 10 s"
}

# Node NAME (a or b) on CPU, in the cluster when CLUSTER=1.
start_node() {
  local dir=$1 name=$2 cpu=$3 cluster=$4 port cfg
  port=$(free_port)
  cfg="{\"rateLimit\": {\"messagesPerSecond\": 0}, \"limits\": {\"maxConnections\": $(( FANOUT_SUBS + 2 * SEND_PAIRS + 1000 ))}, \"metrics\": {\"public\": true}"
  if [[ $cluster == 1 ]]; then
    cfg+=", \"cluster\": {\"redis\": \"redis://127.0.0.1:${PORTS[redis]}\", \"nodeId\": \"n$name\", \"requestTimeoutMs\": 1000}"
  fi
  printf '%s}\n' "$cfg" >"$dir/node-$name.json"
  LOGS[$name]=$dir/node-$name.log
  (cd "$dir" && exec taskset -c "$cpu" "$WSGATE_BIN" --config "$dir/node-$name.json" --workers 1 \
       --port "$port" --host 127.0.0.1 --endpoints "$TMP_ROOT/endpoints") >"${LOGS[$name]}" 2>&1 &
  PIDS[$name]=$!
  PORTS[$name]=$port
  # lib.sh's wait_ready watches SERVER_PID / SERVER_NAME.
  SERVER_PID=${PIDS[$name]} SERVER_NAME="node $name" SERVER_LOG=${LOGS[$name]}
  wait_ready "$port"
  SERVER_PID=""
}

# A gauge of node NAME's /metrics (empty when absent).
node_metric() {
  curl -s --max-time 2 "http://127.0.0.1:${PORTS[$1]}/metrics" 2>/dev/null | awk -v m="$2" '$1 == m { print $2; exit }' || true
}

# Until every node started sees N nodes.
wait_members() {
  local want=$1 n ok
  for _ in $(seq 1 200); do
    ok=1
    for n in a b; do
      [[ -n ${PIDS[$n]:-} ]] || continue
      [[ $(node_metric "$n" wsgate_cluster_nodes) == "$want" ]] || ok=0
    done
    (( ok )) && return 0
    sleep 0.1
  done
  die "the nodes do not see each other after 20 s (wsgate_cluster_nodes: a=$(node_metric a wsgate_cluster_nodes) b=$(node_metric b wsgate_cluster_nodes))"
}

# Stop the nodes first (a node leaves the cluster on its way out), Redis last.
stop_all() {
  local n
  for n in a b redis; do
    [[ -n ${PIDS[$n]:-} ]] || continue
    stop_pid "${PIDS[$n]}" "$([[ $n == redis ]] && echo redis-server || echo "node $n")"
    PIDS[$n]=""
  done
}

cluster_cleanup() {
  local rc=$?
  set +e
  if [[ -n $LOAD_PID ]]; then kill -TERM "$LOAD_PID" 2>/dev/null; wait "$LOAD_PID" 2>/dev/null; LOAD_PID=""; fi
  stop_all
  # lib.sh's cleanup: the temp dir, and the exit status.
  (exit "$rc"); cleanup
}
trap cluster_cleanup EXIT

# What a node's log says beyond the normal: WARN and ERROR lines, and the
# relay script's complaints.
log_notes() {
  [[ -f $1 ]] || return 0
  grep -E '^[^ ]+ (WARN|ERROR) |relay: ' "$1" || true
}

# ----------------------------------------------------------------- runs ----
# Runs of each workload: name, label.
SEND_RUNS=(local cross crossnw)
FANOUT_RUNS=(one onecl two)
declare -A LABEL=([local]="local" [cross]="cross-node" [crossnw]="cross nowait" [one]="1 node" [onecl]="1 node+redis" [two]="2 nodes")
declare -A JSON_KEY=([local]=send_local [cross]=send_cross [crossnw]=send_cross_nowait [one]=fanout_1node [onecl]=fanout_1node_redis [two]=fanout_2nodes)
PHASES=(latency throughput)
# Per run and phase; a, b, r: node a, node b, Redis.
METRICS=(deliveries_per_s last_p50_us last_p99_us last_p999_us each_p50_us url0_dps url1_dps url0_p50_us url1_p50_us
         cpu_a cpu_b cpu_r core_pct busy_pct)
# Results: space-separated, one entry per round, keyed "RUN PHASE METRIC" or "RUN METRIC".
declare -A VALS=() FAILS=() NOTES=()

# Rotation of a list for round $1: the list rotated left by round - 1.
rotate() {
  local round=$1; shift
  local -a l=("$@")
  local n=${#l[@]} i
  for (( i = 0; i < n; i++ )); do printf '%s ' "${l[$(( (i + round - 1) % n ))]}"; done
}

# One run: fresh Redis and nodes for RUN in round ROUND, the client, stop.
cluster_run() {
  local round=$1 run=$2 dir out rc=0 ok=ok ready=""
  dir=$TMP_ROOT/r$round-$run; mkdir -p "$dir"
  PIDS=() LOGS=() PORTS=()
  local -a names=() args=() urls=()
  case $run in
    local|cross|crossnw|onecl|two) start_redis "$dir" ;;
  esac
  case $run in
    one) start_node "$dir" a "$NODE_A_CPU" 0 ;;
    onecl) start_node "$dir" a "$NODE_A_CPU" 1 ;;
    *) start_node "$dir" a "$NODE_A_CPU" 1; start_node "$dir" b "$NODE_B_CPU" 1; wait_members 2 ;;
  esac
  local n pids=""
  for n in a b redis; do
    [[ -n ${PIDS[$n]:-} ]] || continue
    names+=("$n"); pids+="${pids:+,}${PIDS[$n]}"
  done
  local a=127.0.0.1:${PORTS[a]} b=127.0.0.1:${PORTS[b]:-}
  case $run in
    local) urls=("ws://$a/sink" "ws://$a/relay?to=") ;;
    cross) urls=("ws://$b/sink" "ws://$a/relay?to=") ;;
    crossnw) urls=("ws://$b/sink" "ws://$a/relay-nowait?to=") ;;
    one|onecl) urls=("ws://$a/sub" "ws://$a/pub") ;;
    two) urls=("ws://$a/sub" "ws://$b/sub" "ws://$a/pub") ;;
  esac
  if [[ $run == local || $run == cross* ]]; then
    args=(-R -n "$SEND_PAIRS" -s "$SEND_SIZE" -W "$SEND_WINDOW" -d "$SEND_SECS" -w "$SEND_WARMUP_SECS" -T "$FANOUT_MSG_TIMEOUT")
  else
    args=(-n "$FANOUT_SUBS" -s "$FANOUT_SIZE" -W "$FANOUT_WINDOW" -d "$FANOUT_SECS" -w "$FANOUT_WARMUP_SECS"
          -k "$FANOUT_SETUPS" -T "$FANOUT_MSG_TIMEOUT")
  fi
  args+=(-C "$pids")
  [[ $FANOUT_BUSY_POLL == 1 ]] && args+=(-b)
  out=$dir/fanout.out

  wait_quiet
  # shellcheck disable=SC2206  # pids, one word each
  local -a srv_pids=(${pids//,/ })
  cpu_watch_pids "${srv_pids[@]}"
  log "round $round/$ROUNDS, ${LABEL[$run]}: fanout ${args[*]} ${urls[*]}"
  start_load "$out" "${args[@]}" "${urls[@]}"
  ready=$(fanout_ready "$out")
  [[ -n $ready ]] && log "  READY $ready ($(sed -n 's/^READY [0-9]* \([0-9]*\)$/\1/p' "$out") ms after the last upgrade)"
  wait "$LOAD_PID" || rc=$?
  LOAD_PID=""
  cpu_watch_stop
  local run_other=$RUN_OTHER_PCT
  (( rc == 0 )) || { log "WARNING: ${LABEL[$run]}: fanout exited with status $rc: $(head -c 2000 "$out.err")"; ok=FAIL; }
  [[ -s $out.err ]] && log "  fanout stderr: $(head -c 2000 "$out.err")"
  # Cluster calls that failed (504, Redis errors), as the nodes count them.
  local errs notes=""
  for n in a b; do
    [[ -n ${PIDS[$n]:-} ]] || continue
    alive "${PIDS[$n]}" || { log "WARNING: node $n died during the run"; ok=FAIL; notes+="node $n died"$'\n'; continue; }
    errs=$(curl -s --max-time 2 "http://127.0.0.1:${PORTS[$n]}/metrics" | awk '/^wsgate_cluster_errors_total/ && $2 != 0' || true)
    [[ -n $errs ]] && notes+="node $n: $(tr '\n' ' ' <<<"$errs")"$'\n'
  done
  if [[ -n ${PIDS[redis]:-} ]] && ! alive "${PIDS[redis]}"; then
    log "WARNING: redis-server died during the run"; ok=FAIL; notes+="redis-server died"$'\n'
  fi
  stop_all
  for n in a b; do
    [[ -n ${LOGS[$n]:-} ]] || continue
    errs=$(log_notes "${LOGS[$n]}")
    [[ -n $errs ]] && notes+="node $n log: $(wc -l <<<"$errs") line(s), first: $(head -n 3 <<<"$errs" | cut -c1-300 | tr '\n' '|')"$'\n'
  done
  if [[ -n $notes ]]; then
    NOTES[$run]+="round $round: $notes"
    log "  notes: $notes"
  fi

  local ph res m i summary="" expect
  expect=$([[ $run == local || $run == cross* ]] && echo "$SEND_PAIRS" || echo "$FANOUT_SUBS")
  for ph in "${PHASES[@]}"; do
    res=$(phase_line "$ph" "$out")
    if [[ -z $res ]]; then
      log "WARNING: ${LABEL[$run]} $ph: no result"; ok=FAIL
    else
      fanout_phase_ok "${LABEL[$run]} $ph" "$res" "$expect" open || ok=FAIL
    fi
    for m in deliveries_per_s last_p50_us last_p99_us last_p999_us each_p50_us busy_pct; do
      VALS["$run $ph $m"]+="$(jval "$m" "${res:-}") "
    done
    VALS["$run $ph url0_dps"]+="$(jarr url_deliveries_per_s "${res:-}" 0) "
    VALS["$run $ph url1_dps"]+="$(jarr url_deliveries_per_s "${res:-}" 1) "
    VALS["$run $ph url0_p50_us"]+="$(jarr url_each_p50_us "${res:-}" 0) "
    VALS["$run $ph url1_p50_us"]+="$(jarr url_each_p50_us "${res:-}" 1) "
    local cpu_a=null cpu_b=null cpu_r=null
    for i in "${!names[@]}"; do
      case ${names[$i]} in
        a) cpu_a=$(jarr server_cpu_pcts "${res:-}" "$i") ;;
        b) cpu_b=$(jarr server_cpu_pcts "${res:-}" "$i") ;;
        redis) cpu_r=$(jarr server_cpu_pcts "${res:-}" "$i") ;;
      esac
    done
    VALS["$run $ph cpu_a"]+="$cpu_a "
    VALS["$run $ph cpu_b"]+="$cpu_b "
    VALS["$run $ph cpu_r"]+="$cpu_r "
    VALS["$run $ph core_pct"]+="$(node_core_pct "$cpu_a" "$cpu_b" "$cpu_r") "
    summary+="$ph $(jval deliveries_per_s "${res:-}")/s p50 $(jval last_p50_us "${res:-}") us p99 $(jval last_p99_us "${res:-}") us; "
  done
  VALS["$run other"]+="$run_other "
  [[ $ok == ok ]] || { FAILED=1; FAILS[$run]=$(( ${FAILS[$run]:-0} + 1 )); }
  log "round $round/$ROUNDS, ${LABEL[$run]}: ${summary}other ${run_other}%, $ok"
}

# How busy the nodes' cores were: for each CPU holding a node, the CPU% of
# the servers pinned to it (nodes, Redis) summed; the least of those. Near
# 100 means the nodes were bound by CPU; well below, that they were waiting.
node_core_pct() {
  awk -v a="$1" -v b="$2" -v r="$3" -v ca="$NODE_A_CPU" -v cb="$NODE_B_CPU" -v cr="$REDIS_CPU" 'BEGIN {
    if (a == "null") { print "null"; exit }
    sum[ca] += a; nodes[ca] = 1
    if (b != "null") { sum[cb] += b; nodes[cb] = 1 }
    if (r != "null") sum[cr] += r
    least = -1
    for (c in nodes) if (least < 0 || sum[c] < least) least = sum[c]
    print least }'
}

# ------------------------------------------------------------ summary ----

# Per-round values of the deliveries per CPU-second of node N (a or b) of
# RUN's phase: url<i>_dps / cpu_<n> * 100, round by round.
per_cpu_values() {
  local run=$1 ph=$2 n=$3 i
  local -a d c
  read -ra d <<<"${VALS["$run $ph url$([[ $n == a ]] && echo 0 || echo 1)_dps"]}"
  read -ra c <<<"${VALS["$run $ph cpu_$n"]}"
  for i in "${!d[@]}"; do printf '%s ' "$(per "${d[$i]}" "${c[$i]:-null}" 100)"; done
}

# Per round: all deliveries / the CPU seconds of every node (one node: the
# same as per_cpu_a).
per_cpu_nodes_values() {
  local run=$1 ph=$2 i
  local -a d ca cb
  read -ra d <<<"${VALS["$run $ph deliveries_per_s"]}"
  read -ra ca <<<"${VALS["$run $ph cpu_a"]}"
  read -ra cb <<<"${VALS["$run $ph cpu_b"]}"
  for i in "${!d[@]}"; do
    printf '%s ' "$(per "${d[$i]}" "$(awk -v a="${ca[$i]:-null}" -v b="${cb[$i]:-null}" 'BEGIN {
      if (a == "null") print "null"; else print a + (b == "null" ? 0 : b) }')" 100)"
  done
}

JSON_RUNS=""
run_json() {
  local run=$1 ph m mj pj="" med mn mx
  local -a vals ov
  for ph in "${PHASES[@]}"; do
    mj=""
    for m in "${METRICS[@]}" per_cpu_a per_cpu_b per_cpu_nodes; do
      read -ra vals <<<"${VALS["$run $ph $m"]:-}"
      (( ${#vals[@]} > 0 )) || continue   # per_cpu_*: fan-out runs only
      read -r med mn mx < <(stats "${vals[@]}")
      mj+="${mj:+,}\"$m\":{\"median\":$med,\"min\":$mn,\"max\":$mx,\"values\":$(json_list "${vals[@]}")}"
    done
    pj+="${pj:+,}\"$ph\":{$mj}"
  done
  read -ra ov <<<"${VALS["$run other"]}"
  JSON_RUNS+="${JSON_RUNS:+,}\"${JSON_KEY[$run]}\":{$pj,\"other_cpu_pct\":$(json_list "${ov[@]}"),\"failed_runs\":${FAILS[$run]:-0}}"
}

report_send() {
  local run ph med mn mx chk first
  local -a vals
  echo
  echo "== cross-node send: $SEND_PAIRS pairs x ${SEND_SIZE}-byte text, receiver on /sink, sender on /relay?to=<its id>; rounds $ROUNDS (alternating), fresh Redis and nodes per run"
  echo "   local = both sockets on node a, cross-node = receiver on node b (through Redis), cross nowait = the same with send{wait = false}; both nodes up in all"
  echo "   phases of ${SEND_SECS}s after ${SEND_WARMUP_SECS}s warm-up: latency = 1 message in flight per pair, throughput = $SEND_WINDOW per pair; latency = send -> receipt"
  printf '%-11s %-10s %10s %-15s %8s %8s %9s %7s %7s %7s %6s %-7s %s | %s\n' run phase "msgs/s" "min-max" "p50 us" "p99 us" \
    "p99.9 us" "a cpu%" "b cpu%" "redis%" "busy%" check "msgs/s per round" "other% per round"
  for ph in "${PHASES[@]}"; do
    for run in "${SEND_RUNS[@]}"; do
      first=$([[ $ph == latency ]] && echo 1 || echo 0)
      chk=ok; [[ -n ${FAILS[$run]:-} ]] && chk="FAIL(${FAILS[$run]})"
      read -ra vals <<<"${VALS["$run $ph deliveries_per_s"]}"
      read -r med mn mx < <(stats "${vals[@]}")
      printf '%-11s %-10s %10s %-15s %8s %8s %9s %7s %7s %7s %6s %-7s %s | %s\n' "${LABEL[$run]}" "$ph" "$(fmt '%.0f' "$med")" \
        "$(fmt '%.0f' "$mn")-$(fmt '%.0f' "$mx")" "$(fmt '%.0f' "$(median_of "$run $ph last_p50_us")")" \
        "$(fmt '%.0f' "$(median_of "$run $ph last_p99_us")")" "$(fmt '%.0f' "$(median_of "$run $ph last_p999_us")")" \
        "$(fmt '%.0f' "$(median_of "$run $ph cpu_a")")" "$(fmt '%.0f' "$(median_of "$run $ph cpu_b")")" \
        "$(fmt '%.0f' "$(median_of "$run $ph cpu_r")")" "$(fmt '%.0f' "$(median_of "$run $ph busy_pct")")" \
        "$chk" "${vals[*]}" "$( (( first )) && echo "${VALS["$run other"]% }")"
    done
  done
  local lat tp p50 p99 p999 tp50 cross99 goal nwlat nwtp nw99
  lat=$(ratio "$(median_of "cross latency deliveries_per_s")" "$(median_of "local latency deliveries_per_s")")
  tp=$(ratio "$(median_of "cross throughput deliveries_per_s")" "$(median_of "local throughput deliveries_per_s")")
  p50=$(ratio "$(median_of "cross latency last_p50_us")" "$(median_of "local latency last_p50_us")")
  p99=$(ratio "$(median_of "cross latency last_p99_us")" "$(median_of "local latency last_p99_us")")
  p999=$(ratio "$(median_of "cross latency last_p999_us")" "$(median_of "local latency last_p999_us")")
  tp50=$(ratio "$(median_of "cross throughput last_p50_us")" "$(median_of "local throughput last_p50_us")")
  cross99=$(median_of "cross latency last_p99_us")
  goal=$(awk -v x="$cross99" 'BEGIN { if (x == "null") print "unknown"; else if (x < 5000) print "met"; else print "NOT met" }')
  echo "   ratio of medians cross-node/local: msgs/s latency phase $lat, throughput phase $tp; latency phase p50 $p50, p99 $p99, p99.9 $p999; throughput phase p50 $tp50"
  nwlat=$(ratio "$(median_of "crossnw latency deliveries_per_s")" "$(median_of "local latency deliveries_per_s")")
  nwtp=$(ratio "$(median_of "crossnw throughput deliveries_per_s")" "$(median_of "local throughput deliveries_per_s")")
  nw99=$(ratio "$(median_of "crossnw latency last_p99_us")" "$(median_of "local latency last_p99_us")")
  echo "   ratio of medians cross nowait/local: msgs/s latency phase $nwlat, throughput phase $nwtp; latency phase p99 $nw99"
  echo "   goal, cross-node p99 under 5 ms (latency phase): $(fmt '%.2f' "$(us_to_ms "$cross99")") ms, $goal"
  SEND_RATIOS="\"cross_vs_local\":{\"latency_msgs_per_s\":$lat,\"throughput_msgs_per_s\":$tp,\"latency_p50_us\":$p50,\"latency_p99_us\":$p99,\"latency_p999_us\":$p999,\"throughput_p50_us\":$tp50},\"cross_nowait_vs_local\":{\"latency_msgs_per_s\":$nwlat,\"throughput_msgs_per_s\":$nwtp,\"latency_p99_us\":$nw99},\"goal_cross_p99_under_5ms\":\"$goal\""
}

report_fanout() {
  local run ph med mn mx chk first
  local -a vals
  echo
  echo "== fan-out across nodes: $FANOUT_SUBS subscribers x ${FANOUT_SIZE}-byte text, one publisher on node a (publish wait=$PUBLISH_WAIT); rounds $ROUNDS (rotating), fresh Redis and nodes per run"
  echo "   1 node = node a, no cluster; 1 node+redis = node a alone in a cluster; 2 nodes = subscribers round robin over a and b ($(( (FANOUT_SUBS + 1) / 2 )) / $(( FANOUT_SUBS / 2 )))"
  echo "   phases of ${FANOUT_SECS}s after ${FANOUT_WARMUP_SECS}s warm-up: latency = 1 message in flight, throughput = $FANOUT_WINDOW in flight"
  echo "   deliveries/s = receipts in the window / ${FANOUT_SECS}s, by node a / b; last = publish -> last subscriber; each p50 a / b = publish -> a receipt on that node"
  echo "   core% = CPU% of the servers on a node's core (the less busy one): near 100, the nodes were bound by CPU; below, they waited"
  echo "   per cpu-s = a node's deliveries / its CPU seconds: what it would deliver with a core of its own IF bound by CPU (an upper bound)"
  printf '%-13s %-10s %12s %-15s %9s %9s %8s %8s %13s %7s %7s %7s %6s %9s %9s %6s %-7s %s | %s\n' run phase "deliveries/s" "min-max" \
    "a /s" "b /s" "last p50" "last p99" "each p50 a/b" "a cpu%" "b cpu%" "redis%" "core%" "a /cpu-s" "b /cpu-s" "busy%" check \
    "deliveries/s per round" "other% per round"
  printf '%-13s %-10s %12s %-15s %9s %9s %8s %8s %13s\n' "" "" "(median)" "" "" "" "ms" "ms" "ms"
  for ph in "${PHASES[@]}"; do
    for run in "${FANOUT_RUNS[@]}"; do
      VALS["$run $ph per_cpu_a"]=$(per_cpu_values "$run" "$ph" a)
      VALS["$run $ph per_cpu_b"]=$(per_cpu_values "$run" "$ph" b)
      VALS["$run $ph per_cpu_nodes"]=$(per_cpu_nodes_values "$run" "$ph")
    done
  done
  for ph in "${PHASES[@]}"; do
    for run in "${FANOUT_RUNS[@]}"; do
      first=$([[ $ph == latency ]] && echo 1 || echo 0)
      chk=ok; [[ -n ${FAILS[$run]:-} ]] && chk="FAIL(${FAILS[$run]})"
      read -ra vals <<<"${VALS["$run $ph deliveries_per_s"]}"
      read -r med mn mx < <(stats "${vals[@]}")
      printf '%-13s %-10s %12s %-15s %9s %9s %8s %8s %13s %7s %7s %7s %6s %9s %9s %6s %-7s %s | %s\n' "${LABEL[$run]}" "$ph" \
        "$(fmt '%.0f' "$med")" "$(fmt '%.0f' "$mn")-$(fmt '%.0f' "$mx")" \
        "$(fmt '%.0f' "$(median_of "$run $ph url0_dps")")" "$(fmt '%.0f' "$(median_of "$run $ph url1_dps")")" \
        "$(fmt '%.1f' "$(us_to_ms "$(median_of "$run $ph last_p50_us")")")" \
        "$(fmt '%.1f' "$(us_to_ms "$(median_of "$run $ph last_p99_us")")")" \
        "$(fmt '%.1f' "$(us_to_ms "$(median_of "$run $ph url0_p50_us")")")/$(fmt '%.1f' "$(us_to_ms "$(median_of "$run $ph url1_p50_us")")")" \
        "$(fmt '%.0f' "$(median_of "$run $ph cpu_a")")" "$(fmt '%.0f' "$(median_of "$run $ph cpu_b")")" \
        "$(fmt '%.0f' "$(median_of "$run $ph cpu_r")")" "$(fmt '%.0f' "$(median_of "$run $ph core_pct")")" \
        "$(fmt '%.0f' "$(median_of "$run $ph per_cpu_a")")" "$(fmt '%.0f' "$(median_of "$run $ph per_cpu_b")")" \
        "$(fmt '%.0f' "$(median_of "$run $ph busy_pct")")" "$chk" "${vals[*]}" "$( (( first )) && echo "${VALS["$run other"]% }")"
    done
  done
  local base rj="" tot na nb ca cb cn lbl goal=unknown both=null core=null
  for base in one onecl; do
    lbl=${LABEL[$base]}
    for ph in throughput latency; do
      tot=$(ratio "$(median_of "two $ph deliveries_per_s")" "$(median_of "$base $ph deliveries_per_s")")
      na=$(ratio "$(median_of "two $ph url0_dps")" "$(median_of "$base $ph deliveries_per_s")")
      nb=$(ratio "$(median_of "two $ph url1_dps")" "$(median_of "$base $ph deliveries_per_s")")
      ca=$(ratio "$(median_of "two $ph per_cpu_a")" "$(median_of "$base $ph per_cpu_a")")
      cb=$(ratio "$(median_of "two $ph per_cpu_b")" "$(median_of "$base $ph per_cpu_a")")
      cn=$(ratio "$(median_of "two $ph per_cpu_nodes")" "$(median_of "$base $ph per_cpu_nodes")")
      printf '   2 nodes / %-12s %-10s deliveries/s: total %s, node a %s, node b %s; per cpu-s: both nodes %s, node a %s, node b %s\n' \
        "$lbl" "$ph" "$tot" "$na" "$nb" "$cn" "$ca" "$cb"
      rj+="${rj:+,}\"two_vs_${base}_$ph\":{\"total\":$tot,\"node_a\":$na,\"node_b\":$nb,\"per_cpu_s_nodes\":$cn,\"per_cpu_s_node_a\":$ca,\"per_cpu_s_node_b\":$cb}"
      if [[ $base == one && $ph == throughput ]]; then
        both=$cn
        core=$(median_of "two $ph core_pct")
        # Deliveries per CPU-second predict a node with a core of its own
        # only if the nodes were bound by CPU.
        goal=$(awk -v x="$both" -v c="$core" 'BEGIN {
          if (x == "null") print "unknown"
          else if (x < 0.8) print "NOT met"
          else if (c != "null" && c >= 90) print "met"
          else print "unclear (the nodes were not bound by CPU: deliveries per CPU-second overstate them)" }')
      fi
    done
  done
  [[ $NODE_A_CPU == "$NODE_B_CPU" ]] && echo "   nodes a and b share cpu $NODE_A_CPU here: each node's deliveries/s can be at most about half of one node's"
  echo "   goal, with 2 nodes each delivers >= 0.8x the one-node rate (throughput phase): what a node delivers per CPU-second"
  echo "   in the cluster, both nodes' deliveries over both nodes' CPU, over what one node delivers per CPU-second: $both"
  echo "   (2 nodes' core% $core), $goal. Node by node the split follows the scheduler, not the cluster: the node that falls"
  echo "   behind on the shared core finds several messages waiting and writes them to a subscriber in one send(2), the other"
  echo "   writes each on its own, so one looks cheaper per delivery than the other"
  FANOUT_RATIOS="$rj,\"goal_per_node_0_8\":{\"per_cpu_s_both_nodes_ratio\":$both,\"two_nodes_core_pct\":$core,\"verdict\":\"$goal\"}"
}

report() {
  local w run
  SEND_RATIOS="" FANOUT_RATIOS=""
  for w in "${SHOWN[@]}"; do "report_$w"; done
  local noisy total
  read -r noisy total < <(for run in "${RUNS[@]}"; do echo "${VALS["$run other"]}"; done | count_noisy)
  echo
  echo "   processes: node a on cpu $NODE_A_CPU, node b on cpu $NODE_B_CPU, redis on cpu $REDIS_CPU, bench/fanout.c on cpu $LOAD_CPU (busy-poll $([[ $FANOUT_BUSY_POLL == 1 ]] && echo on || echo off))"
  echo "   wsgate: $WSGATE_SRC_BIN (modified $WSGATE_BUILT), 1 worker per node; $("$REDIS_SERVER" --version | awk '{ print $1, $2, $3 }')"
  noisy_warning "$noisy" "$total"
  for run in "${RUNS[@]}"; do
    [[ -n ${NOTES[$run]:-} ]] || continue
    echo "   ${LABEL[$run]}: logs and cluster errors:"
    while IFS= read -r line; do [[ -n $line ]] && echo "     $line"; done <<<"${NOTES[$run]}"
  done
  for run in "${RUNS[@]}"; do run_json "$run"; done
  local wl=""
  for w in "${SHOWN[@]}"; do wl+="${wl:+,}\"$w\""; done
  echo
  echo "{\"bench\":\"cluster\",\"rounds\":$ROUNDS,\"workloads\":[$wl],\"send\":{\"pairs\":$SEND_PAIRS,\"size\":$SEND_SIZE,\"window\":$SEND_WINDOW,\"secs\":$SEND_SECS},\"fanout\":{\"subs\":$FANOUT_SUBS,\"size\":$FANOUT_SIZE,\"window\":$FANOUT_WINDOW,\"secs\":$FANOUT_SECS,\"publish_wait\":$PUBLISH_WAIT},\"busy_poll\":$([[ $FANOUT_BUSY_POLL == 1 ]] && echo true || echo false),\"cpus\":{\"node_a\":$NODE_A_CPU,\"node_b\":$NODE_B_CPU,\"redis\":$REDIS_CPU,\"client\":$LOAD_CPU},\"runs\":{$JSON_RUNS},\"ratios\":{$SEND_RATIOS${SEND_RATIOS:+${FANOUT_RATIOS:+,}}$FANOUT_RATIOS},\"noisy_runs\":$noisy}"
}

# ---------------------------------------------------------------- main ----
check_prereqs "$REDIS_SERVER:redis-server"
build_c_tool "$BENCH_DIR/fanout.c" "$FANOUT"
LOADGEN=$FANOUT
need=$(( FANOUT_SUBS + 2 * SEND_PAIRS + 256 ))
need_nofile "$need" "FANOUT_SUBS=$FANOUT_SUBS (need $need)"

copy_wsgate_bin
mkdir -p "$TMP_ROOT/endpoints"
cat >"$TMP_ROOT/endpoints/sink.lua" <<'EOF'
-- bench/cluster.sh: a receiver; its first and only message is its own socket id.
if websocketInfo.type == "open" then
  websocketInfo.send(websocketInfo.socket_id)
end
EOF
cat >"$TMP_ROOT/endpoints/relay.lua" <<'EOF'
-- bench/cluster.sh: a sender; each message goes to the socket named by ?to=, on any node.
if websocketInfo.type == "data" then
  local err = Websocket.send{socket_id = websocketInfo.parameters.to, message = websocketInfo.message}
  if err then print("relay: send failed: " .. tostring(err.status) .. " " .. tostring(err.type) .. " " .. tostring(err.error)) end
end
EOF
cat >"$TMP_ROOT/endpoints/relay-nowait.lua" <<'EOF'
-- bench/cluster.sh: relay.lua without waiting for the owner's answer.
if websocketInfo.type == "data" then
  local err = Websocket.send{socket_id = websocketInfo.parameters.to, message = websocketInfo.message, wait = false}
  if err then print("relay: send failed: " .. tostring(err.status) .. " " .. tostring(err.type) .. " " .. tostring(err.error)) end
end
EOF
cat >"$TMP_ROOT/endpoints/sub.lua" <<'EOF'
-- bench/cluster.sh (as bench/fanout.sh): every socket of /sub listens to the topic "bench".
if websocketInfo.type == "open" then
  Websocket.subscribe{socket_id = websocketInfo.socket_id, topic = "bench"}
end
EOF
cat >"$TMP_ROOT/endpoints/pub.lua" <<EOF
-- bench/cluster.sh (as bench/fanout.sh): every message on /pub is published to the topic "bench".
if websocketInfo.type == "data" then
  Websocket.publish{topic = "bench", message = websocketInfo.message, wait = $PUBLISH_WAIT}
end
EOF

RUNS=()
[[ " ${SHOWN[*]} " == *" send "* ]] && RUNS+=("${SEND_RUNS[@]}")
[[ " ${SHOWN[*]} " == *" fanout "* ]] && RUNS+=("${FANOUT_RUNS[@]}")
for (( round = 1; round <= ROUNDS; round++ )); do
  order=""
  [[ " ${SHOWN[*]} " == *" send "* ]] && order+=$(rotate "$round" "${SEND_RUNS[@]}")
  [[ " ${SHOWN[*]} " == *" fanout "* ]] && order+=$(rotate "$round" "${FANOUT_RUNS[@]}")
  log "== round $round/$ROUNDS: $order"
  for run in $order; do cluster_run "$round" "$run"; done
done

report
if [[ $FAILED != 0 ]]; then
  log "some runs reported errors, failed connections or missing deliveries (see warnings above)"
  exit 1
fi
