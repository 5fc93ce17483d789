#!/usr/bin/env python3
"""Sustained throughput: HTTP ingest while delivering (docs/benchmarks.md, "Pipeline").

    cargo build --release --bin baton --example loadgen && python3 bench/pipeline.py
    BENCH_SECONDS=20 BENCH_CONCURRENCY=64 BENCH_ROUNDS=3 python3 bench/pipeline.py

Starts, all on 127.0.0.1: Postfix's smtp-sink as the provider (answers every command, forgets
the mail; installed with the Debian package postfix when missing, which needs root), and for
each round a fresh release Baton on a fresh spool on the real disk, routing every message to
that sink. examples/loadgen.rs then posts 1 KB messages over BENCH_CONCURRENCY keep-alive
connections for BENCH_SECONDS (closed loop) while Baton delivers them, and this script scrapes
/metrics every SAMPLE seconds until every accepted message is delivered (or DRAIN_DEADLINE).

Per round it reports:
  accepted/s    202s per second (loadgen), and the p99 of their latency
  delivered/s   recipients delivered per second during the load
  end to end    accepted ÷ (time from the first request to the last delivery)
  e2e/ingest    the ratio the issue's target is about (≥ 0.8: delivery keeps up)
  backlog       messages not yet delivered (queue gauges), sampled each second of the load
  baton cores   CPU used by Baton during the load; rss_MB at the end
  commits       spool commits, writes per commit, mean commit time during the load
  send_ms       mean time of one send to the provider during the load (a connection slot held)
Before the counted rounds one warm-up round runs and is not reported. BENCH_PERF=FILE records a
`perf` profile of Baton during each round's load into FILE (the last round's is kept);
BENCH_PERF_DRAIN=FILE one of the drain after the load (delivery alone).
"""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from promstat import free_port  # bench/ is the script's directory, so on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "64"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# Extra lines for the provider's table, e.g. "max_connections = 64" (defaults otherwise).
EXTRA_PROVIDER = os.environ.get("BENCH_PROVIDER", "")
SAMPLE = 0.1
DRAIN_DEADLINE = 300
KEY = "bench-key-0123456789abcdef"
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BATON = os.path.join(TARGET, "release", "baton")
LOADGEN = os.path.join(TARGET, "release", "examples", "loadgen")


def wait_for(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    sys.exit(f"bench/pipeline.py: {what} not ready after {timeout} s")


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def ensure_smtp_sink():
    if shutil.which("smtp-sink"):
        return
    if os.geteuid() != 0:
        sys.exit("bench/pipeline.py needs smtp-sink (Debian package postfix); run as root to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["debconf-set-selections"], input=b"postfix postfix/main_mailer_type select No configuration\n",
                   check=True)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "postfix"], check=True, env=env, stdout=subprocess.DEVNULL)


def scrape(admin):
    """Sums of the samples this script reads, from one /metrics scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {"delivered": 0.0, "backlog": 0.0, "commit_n": 0.0, "commit_s": 0.0, "batch": 0.0, "rss": 0.0, "send_n": 0.0,
           "send_s": 0.0}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)$", line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "baton_recipients_total" and 'status="delivered"' in labels:
            out["delivered"] += value
        elif name == "baton_queue_messages":
            out["backlog"] += value
        elif name == "baton_spool_commit_duration_seconds_count":
            out["commit_n"] = value
        elif name == "baton_spool_commit_duration_seconds_sum":
            out["commit_s"] = value
        elif name == "baton_spool_commit_batch_size_sum":
            out["batch"] = value
        elif name == "baton_provider_request_duration_seconds_count":
            out["send_n"] += value
        elif name == "baton_provider_request_duration_seconds_sum":
            out["send_s"] += value
        elif name == "process_resident_memory_bytes":
            out["rss"] = value
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_config(work, http, admin, sink):
    conf_dir = os.path.join(work, "conf")
    os.makedirs(conf_dir)
    path = os.path.join(conf_dir, "baton.toml")
    with open(path, "w") as f:
        f.write(f"""[server]
hostname = "bench.localhost"
http_listen = "127.0.0.1:{http}"
admin_listen = "127.0.0.1:{admin}"
shutdown_grace = "1s"

[spool]
dir = "{work}/spool"
max_bytes = "8GiB"

[[clients]]
name = "bench"
api_keys = ["{KEY}"]
allowed_senders = ["*@example.com"]

[providers.sink]
type = "smtp"
host = "127.0.0.1"
port = {sink}
tls = "none"
{EXTRA_PROVIDER}

[[routes]]
name = "default"
providers = ["sink"]
""")
    return path


def one_round(base, sink, seconds):
    work = tempfile.mkdtemp(prefix="round-", dir=base)
    http, admin = free_port(), free_port()
    config = write_config(work, http, admin, sink)
    # Logs away from the config's directory (Baton watches it for reloads).
    log = open(os.path.join(work, "baton.log"), "w")
    baton = subprocess.Popen([BATON, "serve", "--config", config], stdout=log, stderr=log)
    try:
        wait_for("baton", lambda: accepts(admin) and scrape(admin) is not None)
        before = scrape(admin)
        samples = []  # (seconds since start, scrape)
        stop = threading.Event()
        start = time.monotonic()

        def sampler():
            while not stop.is_set():
                samples.append((time.monotonic() - start, scrape(admin)))
                time.sleep(SAMPLE)

        thread = threading.Thread(target=sampler, daemon=True)
        cpu0 = cpu_seconds(baton.pid)
        thread.start()
        perf = None
        if os.environ.get("BENCH_PERF"):
            # A profile of Baton during the load (perf report -i BENCH_PERF).
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "499", "--call-graph", "dwarf,32768", "-p", str(baton.pid), "-o",
                                     os.environ["BENCH_PERF"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lg = subprocess.run(
            [LOADGEN, "--url", f"http://127.0.0.1:{http}", "--key", KEY, "--concurrency", str(CONCURRENCY),
             "--duration", f"{seconds}s", "--json"],
            capture_output=True, text=True, check=True)
        load_end = time.monotonic() - start
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        cpu1 = cpu_seconds(baton.pid)
        report = json.loads(lg.stdout)
        accepted = report["accepted"]
        at_load_end = scrape(admin)
        if os.environ.get("BENCH_PERF_DRAIN"):
            # A profile of Baton delivering alone, the backlog left when the load stopped.
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "499", "--call-graph", "dwarf,32768", "-p",
                                     str(baton.pid), "-o", os.environ["BENCH_PERF_DRAIN"]],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + DRAIN_DEADLINE
        while time.monotonic() < deadline:
            if samples and samples[-1][1]["delivered"] - before["delivered"] >= accepted:
                break
            time.sleep(SAMPLE)
        stop.set()
        thread.join()
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        delivered_all = next((t for t, s in samples if s["delivered"] - before["delivered"] >= accepted), None)
        backlog = []
        for second in range(1, seconds + 1):
            near = [s for t, s in samples if t <= second]
            backlog.append(int(near[-1]["backlog"]) if near else 0)
        d = lambda k: at_load_end[k] - before[k]
        return {
            "accepted": accepted,
            "errors": report["errors"],
            "accepted_s": report["throughput"],
            "p99_ms": report["latency_ms"]["p99"],
            "delivered_s": d("delivered") / load_end,
            "e2e_s": accepted / delivered_all if delivered_all else float("nan"),
            "drain_s": (delivered_all - load_end) if delivered_all else float("nan"),
            "backlog": backlog,
            "cores": (cpu1 - cpu0) / load_end,
            "rss_mb": at_load_end["rss"] / 1e6,
            "commits": d("commit_n"),
            "per_commit": d("batch") / d("commit_n") if d("commit_n") else 0,
            "commit_ms": 1000 * d("commit_s") / d("commit_n") if d("commit_n") else 0,
            "send_ms": 1000 * d("send_s") / d("send_n") if d("send_n") else 0,
        }
    finally:
        baton.send_signal(signal.SIGTERM)
        try:
            baton.wait(timeout=30)
        except subprocess.TimeoutExpired:
            baton.kill()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def main():
    for path in (BATON, LOADGEN):
        if not os.path.exists(path):
            sys.exit(f"{path} missing: run `cargo build --release --bin baton --example loadgen` first")
    ensure_smtp_sink()
    base = os.path.join(ROOT, "target", "bench-tmp")
    os.makedirs(base, exist_ok=True)
    sink_port = free_port()
    sink_cmd = ["smtp-sink"] + (["-u", "nobody"] if os.geteuid() == 0 else []) + [f"127.0.0.1:{sink_port}", "256"]
    sink = subprocess.Popen(sink_cmd)
    try:
        wait_for("smtp-sink", lambda: accepts(sink_port))
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src"], cwd=ROOT).returncode != 0
        print(f"# Baton pipeline benchmark: HTTP ingest while delivering to smtp-sink ({time.strftime('%Y-%m-%d %H:%M')})")
        print(f"baton {rev.strip()}{' + uncommitted changes in src/' if dirty else ''}; loadgen closed loop, "
              f"{CONCURRENCY} connections, {SECONDS} s per round, 1 KB messages; {os.cpu_count()} cores")
        one_round(base, sink_port, 3)  # warm-up: page cache, first-time allocations
        rows = []
        print("round accepted errors accept/s p99_ms | deliv/s  e2e/s e2e/ingest drain_s | cores rss_MB | "
              "commits per_cmt cmt_ms send_ms | backlog each second")
        for n in range(1, ROUNDS + 1):
            r = one_round(base, sink_port, SECONDS)
            rows.append(r)
            print(f"{n:>5} {r['accepted']:>8} {r['errors']:>6} {r['accepted_s']:>8.0f} {r['p99_ms']:>6.1f} | "
                  f"{r['delivered_s']:>7.0f} {r['e2e_s']:>6.0f} {r['e2e_s'] / r['accepted_s']:>10.2f} "
                  f"{r['drain_s']:>7.1f} | {r['cores']:>5.2f} {r['rss_mb']:>6.1f} | {r['commits']:>7.0f} "
                  f"{r['per_commit']:>7.1f} {r['commit_ms']:>6.2f} {r['send_ms']:>7.2f} | {' '.join(map(str, r['backlog']))}", flush=True)
        med = lambda k: statistics.median(r[k] for r in rows)
        print(f"median: accepted {med('accepted_s'):.0f}/s (p99 {med('p99_ms'):.1f} ms), delivered during load "
              f"{med('delivered_s'):.0f}/s, end to end {med('e2e_s'):.0f}/s = "
              f"{statistics.median(r['e2e_s'] / r['accepted_s'] for r in rows):.2f} of ingest")
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
