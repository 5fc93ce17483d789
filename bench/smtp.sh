#!/usr/bin/env bash
# SMTP ingest benchmark for Baton (see docs/benchmarks.md, "SMTP ingest").
#
#   bash bench/smtp.sh                   # full run (a few minutes after the build)
#   BENCH_QUICK=1 bash bench/smtp.sh     # short smoke run
#
# One load, three receivers, side by side on this machine, interleaved round by round so that
# noise from other work on the machine is spread over all three:
#
#   smtp-sink      Postfix's no-op SMTP server: answers every command and forgets the mail.
#                  The ceiling of what the load generator can push.
#   postfix-relay  A private Postfix instance (its own main.cf/master.cf and queue under
#                  target/bench-tmp/, chroot off, loopback only) that relays for 127.0.0.0/8 to
#                  a second smtp-sink: what Postfix itself accepts as a relay.
#   baton          Baton's SMTP listener (release build, fresh spool per round on the real
#                  disk, fsync'd group commit). The load comes from 127.0.0.1, which the bench
#                  client owns through `allowed_networks` (smtp-source cannot AUTH); the route
#                  delivers to the same downstream smtp-sink, so Baton, like Postfix, is also
#                  relaying while it accepts.
#
# Load: Postfix's smtp-source, 20 parallel sessions, 1 KB message bodies (-l 1024), N messages,
#   (a) sessions kept open (-d: next message on the same connection), and
#   (b) one connection per message (connect, HELO, MAIL, RCPT, DATA, QUIT).
# Rate = N / wall-clock time of smtp-source, which exits after the last `250` to DATA ("ingest");
# end to end = N / time from the start until the relay's queue is empty (everything delivered).
#
# Needs root (Postfix's master runs as root) and smtp-source/smtp-sink/postfix: when missing,
# the Debian package postfix is installed (apt-get, non-interactive). The system's own Postfix
# (/etc/postfix) is neither started nor changed. Everything started here is stopped on exit.
#
# Knobs (environment): BENCH_MESSAGES (10000), BENCH_ROUNDS (3), BENCH_SESSIONS (20),
# BENCH_KEEP=1 keeps the work directory (configs, logs, Postfix maillog).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
QUICK="${BENCH_QUICK:-}"
MESSAGES="${BENCH_MESSAGES:-$([ -n "$QUICK" ] && echo 2000 || echo 10000)}"
ROUNDS="${BENCH_ROUNDS:-$([ -n "$QUICK" ] && echo 1 || echo 3)}"
SESSIONS="${BENCH_SESSIONS:-20}"
SIZE=1024

[ "$(id -u)" = 0 ] || { echo "bench/smtp.sh must run as root (Postfix's master process)" >&2; exit 1; }
if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null || ! command -v postfix >/dev/null; then
    echo "== installing Postfix (smtp-source, smtp-sink)"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q >/dev/null
    # The package's own instance is not wanted: policy-rc.d keeps it from being started.
    apt-get install -y -q postfix >/dev/null
fi
command -v python3 >/dev/null || { echo "bench/smtp.sh needs python3 (free ports)" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench/smtp.sh needs curl" >&2; exit 1; }

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
WORK="$ROOT/target/bench-tmp/smtp-$STAMP"
RESULTS="$ROOT/target/bench-tmp/smtp-$STAMP.txt"
mkdir -p "$WORK"

PIDS=()
BATON_PID=""
POSTFIX_STARTED=""
cleanup() {
    local rc=$?
    if [ -n "$BATON_PID" ]; then kill -TERM "$BATON_PID" 2>/dev/null || true; wait "$BATON_PID" 2>/dev/null || true; fi
    if [ -n "$POSTFIX_STARTED" ]; then postfix -c "$WORK/postfix/etc" stop >/dev/null 2>&1 || true; fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "$*" | tee -a "$RESULTS"; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
proc_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys_busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
wait_port() { # PORT: until something accepts on 127.0.0.1:PORT
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listening on 127.0.0.1:$1" >&2
    return 1
}

echo "== building (release)"
cargo build --release --bin baton 2>&1 | grep -E '^error|Finished' || true
BIN="$ROOT/target/release/baton"
[ -x "$BIN" ] || { echo "build failed" >&2; exit 1; }

SINK_PORT="$(freeport)"       # the baseline
DOWN_PORT="$(freeport)"       # where Postfix and Baton relay to
POSTFIX_PORT="$(freeport)"
BATON_PORT="$(freeport)"
HTTP_PORT="$(freeport)"
ADMIN_PORT="$(freeport)"

# ---- receivers -------------------------------------------------------------------------------
smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 256 >/dev/null 2>&1 &
PIDS+=($!)
smtp-sink -u nobody "127.0.0.1:$DOWN_PORT" 256 >/dev/null 2>&1 &
PIDS+=($!)

PF="$WORK/postfix"
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.localhost
mydomain = bench.localhost
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$DOWN_PORT
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file_prefixes = $PF
maillog_file = $PF/maillog
biff = no
EOF
# Debian's defaults, minus chroot (the queue is not under /var/spool/postfix) and the services
# a relay does not use.
cat >"$PF/etc/master.cf" <<EOF
127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
postfix -c "$PF/etc" start >/dev/null 2>&1 || { echo "postfix did not start:" >&2; cat "$PF/maillog" >&2 2>/dev/null; exit 1; }
POSTFIX_STARTED=1
postfix_queue() { find "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" "$PF/queue/maildrop" -type f 2>/dev/null | wc -l; }

# The config gets a directory of its own: Baton watches it for changes (reload), and a log file
# or spool written next to it would wake the watcher on every write.
BATON_DIR="$WORK/baton"
BATON_SPOOL="$WORK/baton-spool"
BATON_LOG="$WORK/baton.log"
mkdir -p "$BATON_DIR"
cat >"$BATON_DIR/baton.toml" <<EOF
[server]
hostname = "baton.bench.localhost"
http_listen = "127.0.0.1:$HTTP_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
smtp_listen = "127.0.0.1:$BATON_PORT"
shutdown_grace = "1s"

[spool]
dir = "$BATON_SPOOL"
max_bytes = "8GiB"

[[clients]]
name = "bench"
allowed_senders = ["*@example.com"]
allowed_networks = ["127.0.0.1/32"]

[providers.downstream]
type = "smtp"
host = "127.0.0.1"
port = $DOWN_PORT
tls = "none"

[[routes]]
name = "default"
providers = ["downstream"]
EOF
fresh_baton() {
    if [ -n "$BATON_PID" ]; then kill -TERM "$BATON_PID" 2>/dev/null || true; wait "$BATON_PID" 2>/dev/null || true; fi
    rm -rf "$BATON_SPOOL"
    "$BIN" serve --config "$BATON_DIR/baton.toml" >>"$BATON_LOG" 2>&1 &
    BATON_PID=$!
    for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" && return 0; sleep 0.1; done
    echo "baton not ready; log:" >&2
    tail -20 "$BATON_LOG" >&2
    exit 1
}
baton_queue() {
    curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^baton_queue_messages\{/ {n += $2} END {print n + 0}'
}

wait_port "$SINK_PORT"
wait_port "$DOWN_PORT"
wait_port "$POSTFIX_PORT"

# ---- one measurement -------------------------------------------------------------------------
# run TARGET MODE: sets RATE (msg/s taken in), E2E (msg/s delivered: messages ÷ time from the
# start to an empty queue), BATON_CORES and MACHINE_CORES (CPU used while taking in).
# Not called in a subshell: it starts Baton and must keep BATON_PID.
run() {
    local target=$1 mode=$2 port keep=()
    case $target in
        smtp-sink) port=$SINK_PORT ;;
        postfix-relay) port=$POSTFIX_PORT ;;
        baton) fresh_baton; port=$BATON_PORT ;;
    esac
    [ "$mode" = session ] && keep=(-d)
    local c0 b0=0 t0 t1 c1 b1=0
    c0=$(sys_busy_ticks)
    [ "$target" = baton ] && b0=$(proc_cpu_ticks "$BATON_PID")
    t0=$(date +%s%N)
    smtp-source -4 -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" "${keep[@]}" -M client.bench.localhost \
        -f sender@example.com -t rcpt@example.net "127.0.0.1:$port" >/dev/null
    t1=$(date +%s%N)
    c1=$(sys_busy_ticks)
    [ "$target" = baton ] && b1=$(proc_cpu_ticks "$BATON_PID")
    read -r RATE BATON_CORES MACHINE_CORES < <(awk -v n="$MESSAGES" -v ns=$((t1 - t0)) -v b=$((b1 - b0)) \
        -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { s = ns / 1e9; printf "%.0f %.2f %.2f\n", n / s, b / hz / s, c / hz / s }')
    SPOOL_STATS=""
    if [ "$target" = baton ]; then
        # Group commits during the run (ingest inserts and the delivery updates that follow).
        SPOOL_STATS=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
            /^baton_spool_commit_duration_seconds_sum/ {d = $2} /^baton_spool_commit_duration_seconds_count/ {n = $2}
            /^baton_spool_commit_batch_size_sum/ {b = $2}
            END { if (n > 0) printf "   spool: %d commits, %.1f writes/commit, %.2f ms/commit", n, b / n, 1000 * d / n }')
    fi
    # End to end: until the relay has delivered everything (its queue is empty), polled every
    # 50 ms. smtp-sink delivers nothing: its end to end is its ingest. This also keeps one
    # round's deliveries from running into the next measurement.
    local t2=$t1
    if [ "$target" = postfix-relay ]; then
        for _ in $(seq 1 2400); do [ "$(postfix_queue)" -eq 0 ] && break; sleep 0.05; done
        t2=$(date +%s%N)
    fi
    if [ "$target" = baton ]; then
        for _ in $(seq 1 2400); do [ "$(baton_queue)" -eq 0 ] && break; sleep 0.05; done
        t2=$(date +%s%N)
    fi
    E2E=$(awk -v n="$MESSAGES" -v ns=$((t2 - t0)) 'BEGIN { printf "%.0f", n / (ns / 1e9) }')
}

say "# Baton SMTP ingest benchmark, $STAMP"
say "commit:       $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (+ uncommitted changes in src/)')"
say "cpu:          $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
say "kernel:       $(uname -r); postfix $(postconf -d -h mail_version 2>/dev/null)"
say "disk:         $(findmnt -n -o SOURCE,FSTYPE -T "$WORK" 2>/dev/null || echo '?') (Baton spool and Postfix queue both here)"
say "load:         smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES [-d] -f sender@example.com -t rcpt@example.net"
say "rounds:       $ROUNDS, interleaved (sink, postfix, baton, sink, ...); median reported"
say ""

echo "== warm-up"
for target in smtp-sink postfix-relay baton; do run "$target" session >/dev/null; done

declare -A RATES E2ES
for mode in session connection; do
    for round in $(seq 1 "$ROUNDS"); do
        for target in smtp-sink postfix-relay baton; do
            run "$target" "$mode"
            RATES[$mode.$target]+="$RATE "
            E2ES[$mode.$target]+="$E2E "
            say "$(printf '%-10s round %d  %-14s in %6s msg/s  end to end %6s msg/s   baton %4s cores   machine %4s cores' "$mode" "$round" "$target" "$RATE" "$E2E" "$BATON_CORES" "$MACHINE_CORES")$SPOOL_STATS"
        done
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
say ""
say "median msg/s                 smtp-sink  postfix-relay     baton   baton/postfix  baton/sink"
for mode in session connection; do
    sink=$(echo "${RATES[$mode.smtp-sink]}" | median)
    for what in in e2e; do
        if [ $what = in ]; then
            pf=$(echo "${RATES[$mode.postfix-relay]}" | median); bt=$(echo "${RATES[$mode.baton]}" | median)
        else
            pf=$(echo "${E2ES[$mode.postfix-relay]}" | median); bt=$(echo "${E2ES[$mode.baton]}" | median)
        fi
        say "$(awk -v m="$mode" -v w="$what" -v s="$sink" -v p="$pf" -v b="$bt" \
            'BEGIN { printf "%-10s %-15s %11d %14d %9d %14.1fx %10.0f%%", m, (w == "in" ? "ingest" : "end to end"), s, p, b, b / p, 100 * b / s }')"
    done
done
say ""
say "(session = -d, 20 connections kept open; connection = a new connection per message)"
say "results written to $RESULTS"
