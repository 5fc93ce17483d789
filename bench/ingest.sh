#!/usr/bin/env bash
# HTTP ingest benchmark for Baton (see docs/benchmarks.md).
#
#   bash bench/ingest.sh            # full run (about 4 minutes after the build)
#   BENCH_QUICK=1 bash bench/ingest.sh   # short smoke run
#
# Builds release, then for each measurement starts a fresh Baton on a fresh spool under
# target/bench-tmp/ (the real disk, not tmpfs, so fsync is real), drives it with
# examples/loadgen.rs over 127.0.0.1 only, and scrapes /metrics before and after.
#
# Scenarios:
#   relay        route -> SMTP provider that is down (127.0.0.1:1, connection refused, retry 1h):
#                each accepted message also gets one (failing) delivery pass and a second spool
#                write, as when a provider is down in production. The "full relay" number.
#   ingest-only  route -> a silent SMTP tarpit, delivery.concurrency = 1, timeout 1h: delivery is
#                stuck on one message, so only the ingest path (HTTP, compose, fsync'd spool
#                insert) is measured.
# Then: 100,000 messages left waiting (relay config) -> RSS, restart -> time to /readyz and RSS.
#
# Knobs (environment): BENCH_DURATION (10s), BENCH_CONCURRENCY ("16 64 256"), BENCH_WAITING
# (100000), BENCH_OPEN_CONCURRENCY (256), BENCH_RATE (5000), BENCH_KEEP=1 keeps spools and logs,
# BENCH_IDLE_WATCH (60): seconds to watch Baton sit with the waiting messages (CPU, RSS, queue).
# BENCH_REV=<git rev> benchmarks that committed revision instead of the work tree (built from
# `git archive` under target/bench-tmp/, with this tree's examples/loadgen.rs), handy while src/ is
# mid-edit. BENCH_QUIET_WAIT (60): before each measurement wait up to this many seconds for the machine to be
# idle (other jobs below 0.25 cores for 2 s), 0 to not wait. The "other" column shows what was left.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
QUICK="${BENCH_QUICK:-}"
DURATION="${BENCH_DURATION:-$([ -n "$QUICK" ] && echo 3s || echo 10s)}"
LEVELS="${BENCH_CONCURRENCY:-$([ -n "$QUICK" ] && echo "64" || echo "16 64 256")}"
WAITING="${BENCH_WAITING:-$([ -n "$QUICK" ] && echo 10000 || echo 100000)}"
OPEN_CONC="${BENCH_OPEN_CONCURRENCY:-256}"
FIXED_RATE="${BENCH_RATE:-5000}"
QUIET_WAIT="${BENCH_QUIET_WAIT:-60}"
WARMUP=2s
IDLE_WATCH="${BENCH_IDLE_WATCH:-$([ -n "$QUICK" ] && echo 10 || echo 60)}"
KEY="bench-key-0123456789abcdef"
PY="$(command -v python3 || true)"
[ -n "$PY" ] || { echo "bench/ingest.sh needs python3 (metrics parsing, SMTP tarpit)" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench/ingest.sh needs curl" >&2; exit 1; }
STAT="$PY $ROOT/bench/promstat.py"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
WORK="$ROOT/target/bench-tmp/ingest-$STAMP"
RESULTS="$ROOT/target/bench-tmp/ingest-$STAMP.txt"
mkdir -p "$WORK"
# Baton's logs go here, away from the config files: Baton watches its config file's directory, and
# a log written next to the config wakes that watcher on every line (about 17% less throughput
# when measured; see docs/benchmarks.md).
LOGS="$WORK/logs"
mkdir -p "$LOGS"

BATON_PID=""
TARPIT_PID=""
cleanup() {
    local rc=$?
    if [ -n "$BATON_PID" ] && kill -0 "$BATON_PID" 2>/dev/null; then
        kill -TERM "$BATON_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$BATON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BATON_PID" 2>/dev/null || true
    fi
    if [ -n "$TARPIT_PID" ]; then kill "$TARPIT_PID" 2>/dev/null || true; fi
    if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "$*" | tee -a "$RESULTS"; }

SRC="$ROOT"
REV_NOTE="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/')"
if [ -n "${BENCH_REV:-}" ]; then
    SRC="$ROOT/target/bench-tmp/src-$(git rev-parse --short "$BENCH_REV")"
    rm -rf "$SRC"
    mkdir -p "$SRC"
    git archive "$BENCH_REV" | tar -x -C "$SRC"
    mkdir -p "$SRC/examples"
    cp "$ROOT/examples/loadgen.rs" "$SRC/examples/loadgen.rs"
    REV_NOTE="$(git rev-parse --short "$BENCH_REV") (committed revision; loadgen from the work tree)"
    export CARGO_TARGET_DIR="$ROOT/target/bench-build"
fi
echo "== building (release) in $SRC"
if ! (cd "$SRC" && cargo build --release --bin baton --example loadgen >"$WORK/build.log" 2>&1); then
    grep -E '^error' -A5 "$WORK/build.log" | head -40 >&2
    echo "build failed (src/ mid-edit? try BENCH_REV=HEAD)" >&2
    exit 1
fi
grep Finished "$WORK/build.log" || true
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release/baton"
LG="$TARGET/release/examples/loadgen"

HTTP_PORT="$($STAT freeport)"
ADMIN_PORT="$($STAT freeport)"
while [ "$ADMIN_PORT" = "$HTTP_PORT" ]; do ADMIN_PORT="$($STAT freeport)"; done
TARPIT_PORT="$($STAT freeport)"
URL="http://127.0.0.1:$HTTP_PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"

# ---- machine facts ---------------------------------------------------------------------------
say "# Baton HTTP ingest benchmark, $STAMP"
say "baton:       $REV_NOTE"
say "cpu:         $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
say "memory:      $(free -m | awk '/^Mem:/ {print $2 " MiB"}')"
say "kernel:      $(uname -r)"
say "rustc:       $(rustc --version)"
say "spool dir:   $WORK ($(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$WORK" 2>/dev/null || df -T "$WORK" | tail -1))"
say "loadgen:     1 thread, raw HTTP/1.1 keep-alive; body text 1024 B (1275 B request); non-202 = error"
say "duration:    $DURATION per closed/open-loop run; each on a fresh spool + fresh Baton, after a $WARMUP warm-up"
say "             at c=64, then $WARMUP of the run's own load on its own connections (not counted)"
say ""

# ---- helpers ---------------------------------------------------------------------------------
write_config() { # NAME MODE(relay|stall)
    local dir="$WORK/$1"
    mkdir -p "$dir"
    local provider concurrency
    if [ "$2" = relay ]; then
        provider="host = \"127.0.0.1\"
port = 1
tls = \"none\"
timeout = \"2s\""
        concurrency=64
    else
        provider="host = \"127.0.0.1\"
port = $TARPIT_PORT
tls = \"none\"
timeout = \"1h\""
        concurrency=1
    fi
    cat >"$dir/baton.toml" <<EOF
[server]
hostname = "bench.localhost"
http_listen = "127.0.0.1:$HTTP_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
shutdown_grace = "1s"

[spool]
dir = "$dir/spool"
max_bytes = "8GiB"

[retry]
schedule = ["1h"]

[delivery]
concurrency = $concurrency

[[clients]]
name = "bench"
api_keys = ["$KEY"]
allowed_senders = ["*@example.com"]

[providers.relay]
type = "smtp"
$provider

[[routes]]
name = "default"
providers = ["relay"]
EOF
    echo "$dir/baton.toml"
}

wait_ready() { # seconds -> prints elapsed ms, fails on timeout
    local start now
    start=$(date +%s%N)
    while :; do
        if curl -sf -o /dev/null "$ADMIN/readyz"; then
            now=$(date +%s%N)
            echo $(((now - start) / 1000000))
            return 0
        fi
        kill -0 "$BATON_PID" 2>/dev/null || { echo "baton exited; log:" >&2; tail -20 "$LOG" >&2; return 1; }
        now=$(date +%s%N)
        [ $(((now - start) / 1000000000)) -lt "$1" ] || { echo "baton not ready after $1 s" >&2; return 1; }
        sleep 0.01
    done
}

START_NS=0
start_baton() { # CONFIG LOG
    LOG="$2"
    START_NS=$(date +%s%N)
    "$BIN" serve --config "$1" >>"$LOG" 2>&1 &
    BATON_PID=$!
}

stop_baton() {
    [ -n "$BATON_PID" ] || return 0
    kill -TERM "$BATON_PID" 2>/dev/null || true
    wait "$BATON_PID" 2>/dev/null || true
    BATON_PID=""
}

fresh_baton() { # CONFIG
    stop_baton
    local dir
    dir="$(dirname "$1")"
    rm -rf "$dir/spool"
    start_baton "$1" "$LOGS/$(basename "$dir").log"
    wait_ready 60 >/dev/null
    # Warm-up: connections, allocator, spool file growth. Not reported.
    "$LG" --url "$URL" --key "$KEY" --concurrency 64 --duration "$WARMUP" --json >/dev/null
    # Relay: let the warm-up's delivery passes finish first. (Ingest-only never delivers.)
    if [ "$1" = "$RELAY_CFG" ]; then wait_drained 120; fi
}

backlog() { # FILE (a /metrics scrape) -> messages waiting for or in a delivery pass
    echo $(($($STAT value 'baton_queue_messages{state="ready"}' "$1") + $($STAT value 'baton_queue_messages{state="in_flight"}' "$1")))
}

# Waits until no message is due or in flight (the relay scenario's delivery passes caught up).
wait_drained() { # SECONDS
    local deadline=$(($(date +%s) + $1))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        scrape "$WORK/mq"
        [ "$(backlog "$WORK/mq")" -le 1 ] && return 0
        sleep 0.5
    done
    echo "   (delivery backlog not drained after $1 s)" | tee -a "$RESULTS"
}

# Waits (up to QUIET_WAIT s) until the machine, Baton idle included, uses under 0.25 cores.
wait_quiet() {
    [ "$QUIET_WAIT" -gt 0 ] || return 0
    local deadline=$(($(date +%s) + QUIET_WAIT)) a b
    while [ "$(date +%s)" -lt "$deadline" ]; do
        a=$(sys_busy_ticks)
        sleep 2
        b=$(sys_busy_ticks)
        [ $((b - a)) -lt 50 ] && return 0
    done
    echo "   (machine still busy after ${QUIET_WAIT}s of waiting; measuring anyway)" | tee -a "$RESULTS"
}

# Watches an otherwise idle Baton for N s: CPU it used, peak RSS, peak of due messages.
idle_watch() { # SECONDS
    local c0 c1 rss max_rss=0 ready max_ready=0
    c0=$(proc_cpu_ticks "$BATON_PID")
    for _ in $(seq 1 "$1"); do
        sleep 1
        rss=$(rss_mb "$BATON_PID")
        max_rss=$(awk -v a="$max_rss" -v b="$rss" 'BEGIN {print (b > a) ? b : a}')
        scrape "$WORK/mw"
        ready=$(backlog "$WORK/mw")
        [ "$ready" -gt "$max_ready" ] && max_ready=$ready
    done
    c1=$(proc_cpu_ticks "$BATON_PID")
    echo "$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.1f", (b - a) / 100}') CPU-s, RSS max $max_rss MB, now $(rss_mb "$BATON_PID") MB; most messages due or in a pass at once: $max_ready"
}

proc_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys_busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
hwm_mb() { awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
scrape() { curl -sf "$ADMIN/metrics" >"$1"; }

ROW_FMT="%-12s %-7s %5s %6s | %7s %6s %8s | %6s %6s %6s %7s | %6s %6s %6s %6s | %5s %5s %5s | %6s %7s\n"
header() {
    # shellcheck disable=SC2059
    printf "$ROW_FMT" scenario mode conc rate sent errors accept/s p50ms p90ms p99ms maxms commits batch cmt_ms cmtp99 baton lgen other rss_MB backlog | tee -a "$RESULTS"
}

LAST_THROUGHPUT=0
LAST_P99=0
measure() { # SCENARIO MODE CONC RATE -- loadgen args...
    local scenario=$1 mode=$2 conc=$3 rate=$4
    shift 5
    local out="$WORK/lg-$scenario-$mode-$conc-$rate.json"
    local timeline="$WORK/lg-$scenario-$mode-$conc-$rate.timeline"
    wait_quiet
    scrape "$WORK/m0"
    local b0 s0 b1 s1 t0 t1
    b0=$(proc_cpu_ticks "$BATON_PID"); s0=$(sys_busy_ticks); t0=$(date +%s%N)
    "$LG" --url "$URL" --key "$KEY" --json --timeline --warmup "$WARMUP" "$@" >"$out" 2>"$timeline"
    b1=$(proc_cpu_ticks "$BATON_PID"); s1=$(sys_busy_ticks); t1=$(date +%s%N)
    scrape "$WORK/m1"
    local wall lg_cpu baton_cores lg_cores other_cores
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print (b - a) / 1e9}')
    lg_cpu=$($STAT json "$out" loadgen_cpu_s)
    baton_cores=$(awk -v a="$b0" -v b="$b1" -v w="$wall" 'BEGIN {printf "%.2f", (b - a) / 100 / w}')
    lg_cores=$(awk -v c="$lg_cpu" -v w="$wall" 'BEGIN {printf "%.2f", c / w}')
    # Busy CPU on the whole machine not accounted for by Baton or loadgen (other jobs, kernel
    # threads such as ext4/jbd2 and softirq work not charged to either): the noise indicator.
    other_cores=$(awk -v a="$s0" -v b="$s1" -v w="$wall" -v bc="$baton_cores" -v lc="$lg_cores" 'BEGIN {v = (b - a) / 100 / w - bc - lc; if (v < 0) v = 0; printf "%.2f", v}')
    local cnt batch cmt_ms cmt99 slow cmt_max
    read -r cnt batch _ _ _ _ < <($STAT hist baton_spool_commit_batch_size "$WORK/m0" "$WORK/m1")
    read -r _ cmt_ms _ cmt99 slow cmt_max < <($STAT hist baton_spool_commit_duration_seconds "$WORK/m0" "$WORK/m1" 0.02)
    local errs
    errs=$($STAT json "$out" errors)
    if [ "$errs" != 0 ]; then
        errs="$errs$($STAT json "$out" errors_by_status | tr -d '{}" ')"
        [ "$($STAT json "$out" io_errors)" = 0 ] || errs="$errs,io=$($STAT json "$out" io_errors)"
    fi
    LAST_THROUGHPUT=$($STAT json "$out" throughput)
    LAST_P99=$($STAT json "$out" latency_ms.p99)
    # shellcheck disable=SC2059
    printf "$ROW_FMT" "$scenario" "$mode" "$conc" "$rate" "$($STAT json "$out" sent)" "$errs" \
        "$(printf %.0f "$LAST_THROUGHPUT")" "$(printf %.2f "$($STAT json "$out" latency_ms.p50)")" "$(printf %.2f "$($STAT json "$out" latency_ms.p90)")" \
        "$(printf %.2f "$LAST_P99")" "$(printf %.1f "$($STAT json "$out" latency_ms.max)")" "$cnt" "$(printf %.1f "$batch")" \
        "$(awk -v v="$cmt_ms" 'BEGIN {printf "%.2f", v * 1000}')" "$(awk -v v="$cmt99" 'BEGIN {printf "%g", v * 1000}')" \
        "$baton_cores" "$lg_cores" "$other_cores" "$(rss_mb "$BATON_PID")" "$(backlog "$WORK/m1")" | tee -a "$RESULTS"
    local worst
    read -r -a worst < <($STAT worst "$timeline")
    if [ "$mode" = open ]; then
        say "             service time (from actual send) p99 $($STAT json "$out" service_ms.p99) ms; send lag p99 $($STAT json "$out" send_lag_ms.p99) ms, max $($STAT json "$out" send_lag_ms.max) ms"
    fi
    say "             worst second: #${worst[0]} p99 ${worst[1]} ms max ${worst[2]} ms; commits > 20 ms: $slow, slowest <= $(awk -v v="$cmt_max" 'BEGIN {printf "%g", v * 1000}') ms"
}

# ---- throughput and latency --------------------------------------------------------------------
"$PY" "$ROOT/bench/tarpit.py" "$TARPIT_PORT" &
TARPIT_PID=$!

RELAY_CFG="$(write_config relay relay)"
STALL_CFG="$(write_config ingest-only stall)"

say "== throughput (closed loop, $DURATION) and latency (open loop, $DURATION, $OPEN_CONC connections)"
say "   batch = spool requests per commit (inserts + delivery updates); cmt_ms = mean commit (fsync) ms;"
say "   cmtp99 = commit-duration bucket holding p99; baton/lgen/other = CPU cores used (2 = whole machine);"
say "   backlog = messages due or in a delivery pass when the run ended (relay: mostly the open circuit's"
say "   cooldown ending, which makes every waiting message due at once; ingest-only: everything, by design)"
header
BEST_RELAY=0
for scenario in relay ingest-only; do
    cfg=$RELAY_CFG
    [ "$scenario" = relay ] || cfg=$STALL_CFG
    best=0
    for c in $LEVELS; do
        fresh_baton "$cfg"
        measure "$scenario" closed "$c" - -- --concurrency "$c" --duration "$DURATION"
        best=$(awk -v a="$best" -v b="$LAST_THROUGHPUT" 'BEGIN {print (b > a) ? b : a}')
    done
    half=$(awk -v b="$best" 'BEGIN {printf "%d", b / 2}')
    [ "$scenario" = relay ] && BEST_RELAY=$best
    for rate in "$half" "$FIXED_RATE"; do
        fresh_baton "$cfg"
        measure "$scenario" open "$OPEN_CONC" "$rate" -- --concurrency "$OPEN_CONC" --rate "$rate" --duration "$DURATION"
    done
done
say ""

# ---- 100k waiting messages, RSS, restart -------------------------------------------------------
say "== $WAITING messages waiting (relay config: provider down, retry in 1h)"
stop_baton
rm -rf "$(dirname "$RELAY_CFG")/spool"
start_baton "$RELAY_CFG" "$LOGS/waiting.log"
wait_ready 60 >/dev/null
sleep 1
say "RSS idle, empty spool:            $(rss_mb "$BATON_PID") MB"
"$LG" --url "$URL" --key "$KEY" --concurrency 64 --count "$WAITING" --json >"$WORK/lg-fill.json"
say "filled: $($STAT json "$WORK/lg-fill.json" accepted) accepted, $($STAT json "$WORK/lg-fill.json" errors) errors, $(printf %.0f "$($STAT json "$WORK/lg-fill.json" throughput)")/s"
# Wait until every message has had its (failing) delivery pass and waits for the retry.
for _ in $(seq 1 600); do
    scrape "$WORK/mq"
    ready=$($STAT value 'baton_queue_messages{state="ready"}' "$WORK/mq")
    inflight=$($STAT value 'baton_queue_messages{state="in_flight"}' "$WORK/mq")
    scheduled=$($STAT value 'baton_queue_messages{state="scheduled"}' "$WORK/mq")
    [ "$ready" = 0 ] && [ "$inflight" = 0 ] && [ "$scheduled" -ge "$WAITING" ] && break
    sleep 0.5
done
sleep 2
scrape "$WORK/mq"
SPOOL_FILE="$(dirname "$RELAY_CFG")/spool/spool.redb"
say "queue: scheduled=$($STAT value 'baton_queue_messages{state="scheduled"}' "$WORK/mq") ready=$($STAT value 'baton_queue_messages{state="ready"}' "$WORK/mq") in_flight=$($STAT value 'baton_queue_messages{state="in_flight"}' "$WORK/mq"); spool_bytes=$($STAT value baton_spool_bytes "$WORK/mq")"
say "RSS with $WAITING waiting:       $(rss_mb "$BATON_PID") MB (peak so far $(hwm_mb "$BATON_PID") MB; /metrics process_resident_memory_bytes $(($($STAT value process_resident_memory_bytes "$WORK/mq") / 1048576)) MB)"
say "idle ${IDLE_WATCH}s with $WAITING waiting: $(idle_watch "$IDLE_WATCH")"
say "spool file: $(du -m --apparent-size "$SPOOL_FILE" | cut -f1) MB apparent, $(du -m "$SPOOL_FILE" | cut -f1) MB allocated"
t0=$(date +%s%N)
stop_baton
t1=$(date +%s%N)
say "shutdown (SIGTERM -> exit):      $(((t1 - t0) / 1000000)) ms"
start_baton "$RELAY_CFG" "$LOGS/waiting.log"
ready_ms=$(wait_ready 300)
say "restart -> /readyz 200:          $ready_ms ms (recovering $WAITING pending messages)"
say "RSS right after restart:         $(rss_mb "$BATON_PID") MB (peak during recovery $(hwm_mb "$BATON_PID") MB)"
sleep 1
say "idle ${IDLE_WATCH}s after restart:        $(idle_watch "$IDLE_WATCH")"
scrape "$WORK/mq"
say "RSS after that:                  $(rss_mb "$BATON_PID") MB; queue scheduled=$($STAT value 'baton_queue_messages{state="scheduled"}' "$WORK/mq") ready=$($STAT value 'baton_queue_messages{state="ready"}' "$WORK/mq")"
stop_baton
say ""
say "results written to $RESULTS"
