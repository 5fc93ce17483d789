#!/usr/bin/env bash
# What cluster mode costs on the ingest path (see docs/benchmarks.md, "What cluster mode costs").
#
#   bash bench/cluster.sh                 # 3 interleaved rounds of 10 s per scenario
#   BENCH_ROUNDS=1 BENCH_DURATION=3s bash bench/cluster.sh   # smoke run
#   BENCH_SCENARIOS="keys keys+cluster" bash bench/cluster.sh  # some scenarios only
#
# One Baton at a time, release build, fresh spool each run, on the ingest-only setup of
# bench/ingest.sh (route -> a silent SMTP tarpit, delivery.concurrency = 1): only the ingest path
# is measured. examples/loadgen.rs drives it closed-loop at c=64 over 127.0.0.1. Scenarios:
#   plain          no Idempotency-Key, no [cluster]
#   keys           a fresh Idempotency-Key on every request, no [cluster] (the spool checks it)
#   keys+cluster   the same with [cluster] on a local redis-server: every request also claims its
#                  key in Redis before the spool write and confirms it after (two round trips)
#   cluster        no keys, [cluster] on: the cluster task runs beside ingest, which never calls Redis
# The scenarios are interleaved round by round (noise hits all alike); the report gives accepted/s
# per run, each scenario's median as a ratio of "keys" (the same requests without the cluster),
# and the CPU redis-server used per 1000 requests (on this machine it shares the cores with Baton
# and the load generator).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${BENCH_ROUNDS:-3}"
DURATION="${BENCH_DURATION:-10s}"
KEY="bench-key-0123456789abcdef"
command -v redis-server >/dev/null || { echo "bench/cluster.sh needs redis-server (Debian: redis-server)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench/cluster.sh needs python3 (the SMTP tarpit)" >&2; exit 1; }

cargo build --release --locked --bin baton --example loadgen >&2
BATON="$ROOT/target/release/baton"
LOADGEN="$ROOT/target/release/examples/loadgen"

WORK="$ROOT/target/bench-tmp/cluster-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$WORK"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP_PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
TARPIT_PORT="$(free_port)"
REDIS_PORT="$(free_port)"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

python3 "$ROOT/bench/tarpit.py" "$TARPIT_PORT" &
PIDS+=($!)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=($REDIS_PID)
# CPU seconds a process has used so far (utime + stime from /proc).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

write_config() { # DIR CLUSTER(yes|no)
    local cluster=""
    if [ "$2" = yes ]; then
        cluster="[cluster]
redis_url = \"redis://127.0.0.1:$REDIS_PORT/0\"
node_id = \"bench\""
    fi
    mkdir -p "$1"
    cat >"$1/baton.toml" <<EOF
[server]
hostname = "bench.localhost"
http_listen = "127.0.0.1:$HTTP_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
shutdown_grace = "1s"

[spool]
dir = "$1/spool"
max_bytes = "8GiB"

[retry]
schedule = ["1h"]

[delivery]
concurrency = 1

[[clients]]
name = "bench"
api_keys = ["$KEY"]
allowed_senders = ["*@example.com"]

[providers.relay]
type = "smtp"
host = "127.0.0.1"
port = $TARPIT_PORT
tls = "none"
timeout = "1h"

[[routes]]
name = "default"
providers = ["relay"]

$cluster
EOF
}

run() { # SCENARIO ROUND -> prints accepted/s
    local scenario="$1" dir="$WORK/$1-$2" cluster=no keys=""
    case "$scenario" in
        keys) keys="--idempotency-keys" ;;
        keys+cluster) keys="--idempotency-keys"; cluster=yes ;;
        cluster) cluster=yes ;;
    esac
    write_config "$dir" "$cluster"
    "$BATON" serve --config "$dir/baton.toml" --log-format json 2>"$dir/baton.log" &
    local pid=$!
    for _ in $(seq 1 200); do
        curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" && break
        sleep 0.05
    done
    if [ "$cluster" = yes ]; then # measured with the node on Redis, not while it connects
        for _ in $(seq 1 100); do
            curl -s "http://127.0.0.1:$ADMIN_PORT/admin/cluster" | grep -q '"connected":true' && break
            sleep 0.05
        done
    fi
    local redis_before
    redis_before="$(cpu_s "$REDIS_PID")"
    # shellcheck disable=SC2086
    "$LOADGEN" --url "http://127.0.0.1:$HTTP_PORT" --key "$KEY" --concurrency 64 --duration "$DURATION" \
        --warmup 2s --json $keys >"$dir/loadgen.json"
    local redis_after received
    redis_after="$(cpu_s "$REDIS_PID")"
    # every message accepted, warm-up included (Redis's CPU is counted for the warm-up too)
    received="$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk '/^baton_messages_received_total/ {n += $NF} END {print n + 0}')"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    # accepted/s, and Redis's CPU per 1000 messages accepted
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); ms = (float(sys.argv[3]) - float(sys.argv[2])) * 1e6 / max(float(sys.argv[4]), 1); print(round(r["throughput"]), round(ms, 1))' \
        "$dir/loadgen.json" "$redis_before" "$redis_after" "$received"
}

read -r -a SCENARIOS <<<"${BENCH_SCENARIOS:-plain keys keys+cluster cluster}"
declare -A RESULTS REDIS_MS
for round in $(seq 1 "$ROUNDS"); do
    for scenario in "${SCENARIOS[@]}"; do
        read -r rate redis_ms < <(run "$scenario" "$round")
        RESULTS[$scenario]="${RESULTS[$scenario]:-} $rate"
        REDIS_MS[$scenario]="${REDIS_MS[$scenario]:-} $redis_ms"
        echo "round $round  $scenario: $rate accepted/s, Redis CPU $redis_ms ms per 1000 accepted" >&2
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
base="$(echo "${RESULTS[keys]}" | median)"
echo "bench/cluster.sh: ingest-only, c=64, $DURATION per run, $ROUNDS interleaved rounds ($(nproc) cores)"
printf '%-14s %-24s %8s %8s  %s\n' scenario "accepted/s per run" median "vs keys" "Redis CPU ms / 1000 accepted"
for scenario in "${SCENARIOS[@]}"; do
    m="$(echo "${RESULTS[$scenario]}" | median)"
    printf '%-14s %-24s %8s %8s  %s\n' "$scenario" "${RESULTS[$scenario]# }" "$m" \
        "$(python3 -c "print(f'{$m / $base:.2f}')")" "${REDIS_MS[$scenario]# }"
done
