#!/usr/bin/env python3
"""Canary time-to-inbox on this machine (docs/benchmarks.md, "Canary time to inbox").

    python3 bench/canary.py            # builds nothing: run `cargo build --release` first
    BENCH_SECONDS=60 python3 bench/canary.py

Starts, all on 127.0.0.1: Dovecot (Debian's dovecot-imapd, a throwaway config and mailbox, as
tests/support/dovecot.rs does), two scripted SMTP providers that hand every message to
dovecot-lda (a provider that delivers at once), and a release Baton with [canary] every second
through each provider. After BENCH_SECONDS it reads baton_canary_delivery_seconds from /metrics
and prints count, mean and the quantiles the histogram buckets allow. What this measures is
Baton's own share of time to inbox (the send, the local delivery, the IMAP read-back period:
a quarter of min(interval, timeout)); through a real provider, the provider's queue adds to it.
Needs root (Dovecot's login processes run as dovenull) and dovecot-imapd.
"""
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from promstat import free_port  # bench/ is the script's directory, so on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = int(os.environ.get("BENCH_SECONDS", "60"))
USER, PASSWORD = "canary@canary.example.com", "canary-bench-secret-01"
LDA = "/usr/lib/dovecot/dovecot-lda"


def start_dovecot(work):
    for sub in ("run", "state", "home"):
        os.makedirs(os.path.join(work, sub))
    os.chmod(work, 0o755)
    subprocess.run(["chown", "-R", "65534:65534", os.path.join(work, "home")], check=True)
    with open(os.path.join(work, "users"), "w") as f:
        f.write(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    port = free_port()
    conf = os.path.join(work, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"""base_dir = {work}/run
state_dir = {work}/state
log_path = {work}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
first_valid_uid = 0
default_login_user = dovenull
default_internal_user = dovecot
default_internal_group = dovecot
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {work}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={work}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
""")
    proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", conf])
    wait_port(port)
    return proc, port, conf


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


async def provider(reader, writer, conf):
    """A minimal SMTP server that delivers each message with dovecot-lda before its 250."""
    try:
        await serve(reader, writer, conf)
    except (asyncio.CancelledError, ConnectionError):
        pass  # Baton closed the connection, or the bench is over


async def serve(reader, writer, conf):
    def reply(line):
        writer.write((line + "\r\n").encode())

    reply("220 provider ready")
    while True:
        line = (await reader.readline()).decode(errors="replace").strip()
        if not line:
            break
        verb = line.split(" ")[0].upper()
        if verb in ("EHLO", "HELO"):
            reply("250 provider")
        elif verb == "DATA":
            reply("354 go ahead")
            await writer.drain()
            data = bytearray()
            while True:
                chunk = await reader.readline()
                if chunk in (b".\r\n", b".\n", b""):
                    break
                data += chunk[1:] if chunk.startswith(b"..") else chunk
            lda = await asyncio.create_subprocess_exec(LDA, "-c", conf, "-d", USER, stdin=asyncio.subprocess.PIPE)
            await lda.communicate(bytes(data))
            reply("250 delivered")
        elif verb == "QUIT":
            reply("221 bye")
            await writer.drain()
            break
        else:
            reply("250 ok")
        await writer.drain()
    writer.close()


def baton_config(work, providers, imap_port):
    spool = os.path.join(work, "spool")
    blocks = "".join(
        f'\n[providers.{name}]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\nprobe = false\n'
        for name, port in providers
    )
    names = ", ".join(f'"{n}"' for n, _ in providers)
    return f"""[server]
hostname = "baton.bench"
http_listen = "127.0.0.1:{free_port()}"
admin_listen = "127.0.0.1:{free_port()}"

[spool]
dir = "{spool}"

[[clients]]
name = "app"
api_keys = ["bench-api-key-0123456789"]
allowed_senders = ["*@example.com"]
{blocks}
[[routes]]
name = "default"
providers = [{names}]

[canary]
interval = "1s"
timeout = "20s"
from = "canary@example.com"
to = "{USER}"

[canary.imap]
host = "127.0.0.1"
port = {imap_port}
tls = "none"
username = "{USER}"
password = "{PASSWORD}"
"""


def histogram(text, provider):
    buckets, count, total = [], 0.0, 0.0
    for line in text.splitlines():
        m = re.match(r'baton_canary_delivery_seconds_(bucket|count|sum)\{(.*)\} (\S+)', line)
        if not m or f'provider="{provider}"' not in m.group(2):
            continue
        if m.group(1) == "bucket":
            le = re.search(r'le="([^"]+)"', m.group(2)).group(1)
            buckets.append((float("inf") if le == "+Inf" else float(le), float(m.group(3))))
        elif m.group(1) == "count":
            count = float(m.group(3))
        else:
            total = float(m.group(3))
    return sorted(buckets), count, total


def quantile(buckets, count, q):
    for le, n in buckets:
        if n >= q * count:
            return le
    return float("inf")


async def main():
    if os.geteuid() != 0:
        sys.exit("bench/canary.py must run as root (Dovecot's login processes)")
    binary = os.path.join(ROOT, "target", "release", "baton")
    if not (os.path.exists(binary) and os.path.exists(LDA)):
        sys.exit("needs target/release/baton (cargo build --release) and dovecot-imapd")
    work = tempfile.mkdtemp(prefix="bench-canary-", dir=os.path.join(ROOT, "target"))
    dovecot, imap_port, conf = start_dovecot(work)
    servers, providers = [], []
    for name in ("alpha", "beta"):
        port = free_port()
        servers.append(await asyncio.start_server(lambda r, w: provider(r, w, conf), "127.0.0.1", port))
        providers.append((name, port))
    config = os.path.join(work, "baton.toml")
    with open(config, "w") as f:
        f.write(baton_config(work, providers, imap_port))
    admin = re.search(r'admin_listen = "([^"]+)"', open(config).read()).group(1)
    baton = subprocess.Popen([binary, "serve", "--config", config], stderr=open(os.path.join(work, "baton.log"), "w"))
    try:
        wait_port(int(admin.split(":")[1]))
        print(f"== canaries every 1 s through 2 providers for {SECONDS} s")
        await asyncio.sleep(SECONDS)
        text = urllib.request.urlopen(f"http://{admin}/metrics").read().decode()
        for name, _ in providers:
            buckets, count, total = histogram(text, name)
            if not count:
                print(f"{name}: no canary read back")
                continue
            print(
                f"{name}: {int(count)} canaries read back, mean {total / count:.2f} s, "
                f"p50 <= {quantile(buckets, count, 0.5)} s, p90 <= {quantile(buckets, count, 0.9)} s, "
                f"p99 <= {quantile(buckets, count, 0.99)} s"
            )
    finally:
        baton.send_signal(signal.SIGTERM)
        baton.wait(timeout=30)
        dovecot.send_signal(signal.SIGTERM)
        dovecot.wait(timeout=30)
        for s in servers:
            s.close()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


asyncio.run(main())
