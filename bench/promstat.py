#!/usr/bin/env python3
"""Small helpers for bench/ingest.sh: read Prometheus text scrapes and loadgen JSON.

  promstat.py hist NAME BEFORE AFTER   -> "count mean p50 p99" of histogram NAME between two scrapes
                                          (percentiles are bucket upper bounds, Prometheus-style)
  promstat.py value NAME[{labels}] FILE -> value of one sample (0 if missing)
  promstat.py json FILE KEY[.KEY...]    -> a field of a JSON object (loadgen --json output)
  promstat.py freeport                  -> a free TCP port on 127.0.0.1
"""
import json
import math
import re
import socket
import sys


def samples(path):
    out = {}
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            m = re.match(r"^(\S+?)(\{[^}]*\})?\s+(\S+)$", line.strip())
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def hist(name, before, after):
    a, b = samples(before), samples(after)
    d = lambda k: b.get(k, 0.0) - a.get(k, 0.0)
    count, total = d(name + "_count"), d(name + "_sum")
    buckets = []
    for k in b:
        m = re.match(re.escape(name) + r'_bucket\{le="([^"]+)"\}$', k)
        if m:
            le = math.inf if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, d(k)))
    buckets.sort()

    def q(p):
        if count <= 0:
            return "nan"
        for le, c in buckets:
            if c >= p * count:
                return "inf" if le == math.inf else "%g" % le
        return "inf"

    mean = total / count if count > 0 else float("nan")
    print("%d %.6g %s %s" % (count, mean, q(0.5), q(0.99)))


def main():
    cmd = sys.argv[1]
    if cmd == "hist":
        hist(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "value":
        v = samples(sys.argv[3]).get(sys.argv[2], 0.0)
        print("%d" % v if v == int(v) else "%g" % v)
    elif cmd == "json":
        with open(sys.argv[2]) as f:
            v = json.loads(f.read().strip().splitlines()[-1])
        for k in sys.argv[3].split("."):
            v = v.get(k) if isinstance(v, dict) else None
        print("null" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else v))
    elif cmd == "freeport":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
        s.close()
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
