#!/usr/bin/env bash
# TLS benchmark harness: wsgate vs nginx + lua-nginx-websocket over wss://.
#
# Usage: bench/run-tls.sh [wsgate|nginx|all]        (default: all)
#
# Like bench/run.sh (whose helpers and load generator, bench/wsload.c, it
# shares through bench/lib.sh), but every connection is wss://. A throw-away self-signed certificate per key type
# (ECDSA P-256 and RSA 2048) is made with `openssl req` in the temp dir; both
# servers get the same pair. wsgate runs with `--workers 1` and
# {"rateLimit":{"messagesPerSecond":0},"tls":{...}}; nginx runs
# bench/nginx/nginx.conf with `worker_processes 1`, `listen ... ssl` and
# bench/nginx/tls.conf. Both offer TLS 1.2 and 1.3 (1.3 is negotiated),
# OpenSSL's default suites and groups, and session tickets.
#
# For each server, pinned to CPU 0 (the load generator to CPU 1):
#   1. echo throughput over TLS: 100 connections, 64-byte text messages, 1
#      and 16 messages in flight per connection, 10 s each (after a warm-up);
#   2. handshakes/s: HS_INFLIGHT (50) cycles in flight for HS_SECS (10) s;
#      one cycle = TCP connect + full TLS handshake (no session resumption:
#      the client never offers a session) + WebSocket upgrade + close
#      handshake (client close frame, server close frame, close_notify,
#      close). Measured with the TLS_KEY certificate on the echo instance,
#      then for each other type in HANDSHAKE_KEYS on a fresh instance. With
#      HS_RESUME=1 also resumed handshakes (wsload -r), as information.
#      Besides the rate, the server's CPU time per cycle is reported: on a
#      2-core box the load generator (OpenSSL 3.0's client handshake is
#      expensive) can saturate before the server does, and "hs/s @1 core" =
#      1e6 / (server us per cycle) is what one fully busy server core would do;
#   3. resident memory per idle TLS connection, IDLE_CONNS (10,000) held
#      open, on a fresh instance per variant (warm-up echo first, then the
#      baseline, as in run.sh): wsgate without and with permessage-deflate
#      negotiated (the client offers "permessage-deflate;
#      client_max_window_bits" or nothing), and, as information, with
#      context takeover (compression.serverNoContextTakeover and
#      clientNoContextTakeover false; wsgate creates a connection's own zlib
#      streams with its first message, so this row shows connections that
#      have not sent one yet); nginx without (lua-resty-websocket has no
#      permessage-deflate).
# Prints a table per server and, at the end, one JSON line per server. Exit
# status is non-zero if any run reported errors, failed connections, wrong
# echoes, a resumed handshake where a full one was wanted, or an unexpected
# permessage-deflate count.
#
# Tunables (environment): those of run.sh (see bench/lib.sh; WSLOAD is where
# the load generator is built) except CHURN_*, plus TLS_KEY (ec or rsa:
# certificate for echo, idle and the first handshake run; default ec),
# HANDSHAKE_KEYS (default "ec rsa"), HS_SECS, HS_INFLIGHT, HS_RESUME (default
# 1), WSGATE_IDLE_VARIANTS (default "plain deflate takeover"),
# NGINX_IDLE_VARIANTS (default "plain").
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

HEALTH_SCHEME=https
ECHO_LOAD_COLUMN=1

TLS_KEY=${TLS_KEY:-ec}
HANDSHAKE_KEYS=${HANDSHAKE_KEYS:-ec rsa}
HS_SECS=${HS_SECS:-10}
HS_INFLIGHT=${HS_INFLIGHT:-50}
HS_RESUME=${HS_RESUME:-1}
WSGATE_IDLE_VARIANTS=${WSGATE_IDLE_VARIANTS:-plain deflate takeover}
NGINX_IDLE_VARIANTS=${NGINX_IDLE_VARIANTS:-plain}

parse_servers "$@"
for k in $TLS_KEY $HANDSHAKE_KEYS; do
  [[ $k == ec || $k == rsa ]] || die "unknown key type '$k' (ec or rsa)"
done

declare -a JSON_LINES=()
bench_init

# ------------------------------------------------------- certificates ----
key_label() { case "$1" in ec) echo "ECDSA P-256" ;; rsa) echo "RSA 2048" ;; esac; }

# A throw-away self-signed certificate for localhost / 127.0.0.1, valid for
# two days, in $TMP_ROOT/cert-$1/{cert,key}.pem.
make_cert() {
  local kind=$1 dir=$TMP_ROOT/cert-$1
  local -a newkey
  [[ -f $dir/cert.pem ]] && return 0
  case "$kind" in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
  esac
  mkdir -p "$dir"; chmod 755 "$dir"
  openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>"$dir/openssl.log" \
    || die "openssl req failed: $(cat "$dir/openssl.log")"
}

# ------------------------------------------------------------ servers ----
# Start server NAME with certificate KIND; VARIANT "takeover" turns context
# takeover on in wsgate. Sets URL. Each start gets its own directory.
INSTANCE=0
start_tls_server() {
  local name=$1 kind=$2 variant=${3:-} dir port certs=$TMP_ROOT/cert-$2
  INSTANCE=$(( INSTANCE + 1 ))
  dir=$TMP_ROOT/$name-$INSTANCE; mkdir -p "$dir"; chmod 755 "$dir"
  port=$(free_port)
  local compression=""
  [[ $variant == takeover ]] && compression=',"compression":{"serverNoContextTakeover":false,"clientNoContextTakeover":false}'
  WSGATE_CONFIG="{\"rateLimit\":{\"messagesPerSecond\":0},\"tls\":{\"certificate\":\"$certs/cert.pem\",\"privateKey\":\"$certs/key.pem\"}$compression}"
  NGINX_TLS_DIR=$certs
  start_server "$name" "$dir" "$port"
  URL="wss://127.0.0.1:$port/echo"
  DIR=$dir
}

# ------------------------------------------------------- measurements ----
# Handshake cycles against URL. Usage: measure_handshake TAG LABEL [-r]
# Appends a row to HS_ROWS and JSON fragments to HS_*_JSON.
HS_ROWS="" HS_JSON="" HS_US_JSON="" HS_CPU_JSON="" HS_LOAD_JSON="" HS_OTHER_JSON=""
measure_handshake() {
  local tag=$1 label=$2; shift 2
  log "$SERVER_NAME: handshakes ($label) -c $HS_INFLIGHT -d $HS_SECS $*"
  measured_run "$DIR/hs-$tag.json" -m churn -c "$HS_INFLIGHT" -d "$HS_SECS" -S "$IDLE_SRCS" "$@" "$URL"
  local res=$RUN_RES ok=ok rate total resumed errs cfail us core
  log "  $res"
  rate=$(jnum handshakes_per_s "$res"); total=$(jnum cycles_total "$res")
  resumed=$(jnum resumed "$res"); errs=$(jnum errors "$res"); cfail=$(jnum connect_fail "$res")
  if [[ -z $rate || -z $total || $total == 0 || $errs != 0 || $cfail != 0 ]]; then
    log "WARNING: $SERVER_NAME handshakes ($label): cycles=$total errors=$errs connect_fail=$cfail"
    ok=FAIL
  elif [[ $* != *-r* && $resumed != 0 ]]; then
    log "WARNING: $SERVER_NAME handshakes ($label): $resumed resumed handshakes, wanted full ones only"
    ok=FAIL
  fi
  [[ $ok == ok ]] || FAILED=1
  # Server CPU time per completed cycle (the drain after the window included
  # on both sides of the ratio), and what one busy core would sustain.
  us=$(awk -v t="$RUN_SRV_TICKS" -v hz="$CLK_TCK" -v n="${total:-0}" 'BEGIN { if (n > 0) printf "%d", t / hz * 1e6 / n + 0.5; else print "null" }')
  core=$(awk -v u="$us" 'BEGIN { if (u + 0 > 0) printf "%d", 1e6 / u + 0.5; else print "null" }')
  HS_ROWS+=$(printf '  %-30s %9s %8s %8s %9s %9s %9s %9s %9s %9s %7s %s' "$label" \
    "$rate" "$(awk -v v="$(jnum p50_us "$res")" 'BEGIN { printf "%.1f", v / 1000 }')" \
    "$(awk -v v="$(jnum p99_us "$res")" 'BEGIN { printf "%.1f", v / 1000 }')" \
    "$resumed" "$RUN_SRV_PCT" "$us" "$core" "$RUN_LOAD_PCT" "$RUN_OTHER_PCT" "$errs" "$ok")$'\n'
  HS_JSON+="${HS_JSON:+,}\"$tag\":$(jval handshakes_per_s "$res")"
  HS_US_JSON+="${HS_US_JSON:+,}\"$tag\":$us"
  HS_CPU_JSON+="${HS_CPU_JSON:+,}\"$tag\":$RUN_SRV_PCT"
  HS_LOAD_JSON+="${HS_LOAD_JSON:+,}\"$tag\":$RUN_LOAD_PCT"
  HS_OTHER_JSON+="${HS_OTHER_JSON:+,}\"$tag\":$RUN_OTHER_PCT"
}

# Idle memory of one variant on a fresh instance. Usage: idle_variant NAME VARIANT
# Appends rows to MEM_ROWS and JSON fragments to MEM_*_JSON.
MEM_ROWS="" MEM_JSON="" MEM_BASE_JSON="" MEM_10K_JSON="" MEM_DEFLATE_JSON="" MEM_WORKER_JSON=""
idle_variant() {
  local name=$1 variant=$2 label expect=0
  local -a args=()
  case "$variant" in
    plain) label="no extension offered" ;;
    deflate) label="permessage-deflate"; args=(-z) ;;
    takeover) label="deflate+ctx takeover (info)"; args=(-z) ;;
    *) die "unknown idle variant '$variant' (plain, deflate or takeover)" ;;
  esac
  [[ $name == wsgate && $variant != plain ]] && expect=$IDLE_CONNS
  [[ $name == nginx && $variant == takeover ]] && die "the takeover variant is a wsgate setting"
  start_tls_server "$name" "$TLS_KEY" "$variant"
  echo_warmup "$URL" "$DIR"
  measure_idle "$URL" "$DIR" "$variant" "${args[@]}"
  stop_server
  local negotiated ok=$IDLE_OK
  negotiated=$(jnum deflate_negotiated "$IDLE_RES")
  if [[ $negotiated != "$expect" ]]; then
    log "WARNING: $name idle ($variant): permessage-deflate negotiated on ${negotiated:-?} connections, expected $expect"
    ok=FAIL; FAILED=1
  fi
  local who="total"; [[ $name == nginx ]] && who="master+worker"
  MEM_ROWS+=$(printf '  %-30s %-14s %10s %12s %15s %9s %s' "$label" "$who" "$IDLE_BASE_TOTAL" "$IDLE_TOTAL" \
    "$IDLE_PER_CONN" "${negotiated:-?}" "$ok")$'\n'
  if [[ $name == nginx ]]; then
    MEM_ROWS+=$(printf '  %-30s %-14s %10s %12s %15s' "" "worker only" "$IDLE_BASE_MAIN" "$IDLE_MAIN" "$IDLE_PER_CONN_MAIN")$'\n'
    MEM_WORKER_JSON+="${MEM_WORKER_JSON:+,}\"$variant\":$IDLE_PER_CONN_MAIN"
  fi
  local deflate_answer
  deflate_answer=$(jstr deflate_answer "$IDLE_RES")
  [[ -n $deflate_answer ]] && MEM_ROWS+="      (answer: $deflate_answer)"$'\n'
  MEM_JSON+="${MEM_JSON:+,}\"$variant\":$IDLE_PER_CONN"
  MEM_BASE_JSON+="${MEM_BASE_JSON:+,}\"$variant\":$IDLE_BASE_TOTAL"
  MEM_10K_JSON+="${MEM_10K_JSON:+,}\"$variant\":$IDLE_TOTAL"
  MEM_DEFLATE_JSON+="${MEM_DEFLATE_JSON:+,}\"$variant\":${negotiated:-null}"
}

# ------------------------------------------------------------- one run ----
bench_server() {
  local name=$1 k variants
  HS_ROWS="" HS_JSON="" HS_US_JSON="" HS_CPU_JSON="" HS_LOAD_JSON="" HS_OTHER_JSON=""
  MEM_ROWS="" MEM_JSON="" MEM_BASE_JSON="" MEM_10K_JSON="" MEM_DEFLATE_JSON="" MEM_WORKER_JSON=""

  # ---- echo throughput and handshakes on one instance (TLS_KEY certificate)
  start_tls_server "$name" "$TLS_KEY"
  local rss_start
  # shellcheck disable=SC2046
  rss_start=$(sum_rss "$SERVER_PID" $(descendants "$SERVER_PID"))
  echo_warmup "$URL" "$DIR"
  measure_echo "$URL" "$DIR"
  local first tls_version cipher
  first=$(cat "$DIR/warm.json")
  tls_version=$(jstr tls_version "$first"); cipher=$(jstr cipher "$first")
  measure_handshake "full_$TLS_KEY" "full, $(key_label "$TLS_KEY")"
  [[ $HS_RESUME == 1 ]] && measure_handshake "resumed_$TLS_KEY" "resumed, $(key_label "$TLS_KEY") (info)" -r
  stop_server

  # ---- handshakes with the other certificate types, each on a fresh instance
  for k in $HANDSHAKE_KEYS; do
    [[ $k == "$TLS_KEY" ]] && continue
    start_tls_server "$name" "$k"
    log "$name: handshake warm-up ${WARMUP_SECS}s"
    run_load -m churn -c "$HS_INFLIGHT" -d "$WARMUP_SECS" -S "$IDLE_SRCS" "$URL" >/dev/null
    measure_handshake "full_$k" "full, $(key_label "$k")"
    stop_server
  done

  # ---- idle memory, a fresh instance per variant
  variants=$WSGATE_IDLE_VARIANTS; [[ $name == nginx ]] && variants=$NGINX_IDLE_VARIANTS
  for k in $variants; do idle_variant "$name" "$k"; done

  # ---- report
  {
    echo
    echo "== $name over TLS  ($tls_version $cipher, $(key_label "$TLS_KEY") certificate; server cpu $SERVER_CPU, load cpu $LOAD_CPU)"
    echo "  echo: $ECHO_CONNS conns x $ECHO_SIZE B, ${ECHO_SECS}s"
    echo_header
    printf '%s' "$ECHO_ROWS"
    echo "  handshakes: $HS_INFLIGHT in flight, ${HS_SECS}s; cycle = TCP connect + TLS handshake + upgrade + close handshake"
    printf '  %-30s %9s %8s %8s %9s %9s %9s %9s %9s %9s %7s %s\n' test "hs/s" "p50 ms" "p99 ms" resumed \
      "srv cpu%" "srv us/hs" "hs/s@core" "load cpu%" "other%" errors check
    printf '%s' "$HS_ROWS"
    echo "  memory (RSS): $IDLE_CONNS idle TLS connections, fresh server per row"
    printf '  %-30s %-14s %10s %12s %15s %9s %s\n' variant process "base KiB" "idle KiB" "B per idle conn" deflate check
    printf '%s' "$MEM_ROWS"
    printf '  %-30s %10s\n' "rss right after start" "$rss_start"
  }

  local extra=""
  [[ -n $MEM_WORKER_JSON ]] && extra=",\"worker_bytes_per_idle_conn\":{$MEM_WORKER_JSON}"
  JSON_LINES+=("{\"server\":\"$name\",\"tls_version\":\"$tls_version\",\"cipher\":\"$cipher\",\"cert\":\"$TLS_KEY\",\"echo_msgs_per_s\":{$ECHO_JSON},\"echo_conns\":$ECHO_CONNS,\"echo_size\":$ECHO_SIZE,\"echo_secs\":$ECHO_SECS,\"echo_server_cpu_pct\":{$ECHO_CPU_JSON},\"echo_load_cpu_pct\":{$ECHO_LOAD_JSON},\"echo_other_cpu_pct\":{$ECHO_OTHER_JSON},\"handshakes_per_s\":{$HS_JSON},\"handshake_inflight\":$HS_INFLIGHT,\"handshake_secs\":$HS_SECS,\"handshake_server_us\":{$HS_US_JSON},\"handshake_server_cpu_pct\":{$HS_CPU_JSON},\"handshake_load_cpu_pct\":{$HS_LOAD_JSON},\"handshake_other_cpu_pct\":{$HS_OTHER_JSON},\"rss_start_kib\":$rss_start,\"idle_conns\":$IDLE_CONNS,\"bytes_per_idle_conn\":{$MEM_JSON},\"rss_base_kib\":{$MEM_BASE_JSON},\"rss_10k_kib\":{$MEM_10K_JSON},\"deflate_negotiated\":{$MEM_DEFLATE_JSON}$extra}")
}

# ---------------------------------------------------------------- main ----
check_prereqs openssl:openssl
build_loadgen

raise_nofile

for k in $TLS_KEY $HANDSHAKE_KEYS; do make_cert "$k"; done

bench_all
