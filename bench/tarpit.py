#!/usr/bin/env python3
"""A silent TCP listener on 127.0.0.1:PORT: accepts connections and never says anything.

bench/ingest.sh routes the "ingest-only" scenario to it with a long SMTP timeout and
delivery.concurrency = 1, so the one delivery slot waits for an SMTP greeting that never comes
and delivery does (almost) no work while ingest is measured.
"""
import socket
import sys
import time

port = int(sys.argv[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(128)
held = []
while True:
    conn, _ = s.accept()
    held.append(conn)
    time.sleep(0.01)
