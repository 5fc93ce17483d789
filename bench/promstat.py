#!/usr/bin/env python3
"""Small helpers for bench/ingest.sh: read Prometheus text scrapes and loadgen JSON.

  promstat.py hist NAME BEFORE AFTER [LE] -> "count mean p50 p99 over" of histogram NAME between two
                                          scrapes (percentiles are bucket upper bounds, Prometheus-
                                          style; over = observations above bucket bound LE), then
                                          the bucket bound holding the largest observation
  promstat.py value NAME[{labels}] FILE -> value of one sample (0 if missing)
  promstat.py json FILE KEY[.KEY...]    -> a field of a JSON object (loadgen --json output)
  promstat.py freeport                  -> a free TCP port on 127.0.0.1
  promstat.py worst TIMELINE            -> "second p99 max" of the worst second in loadgen --timeline output
"""
import json
import math
import re
import socket
import sys


def free_port():
    """A free TCP port on 127.0.0.1 (also imported by bench/canary.py and bench/pipeline.py)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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


def hist(name, before, after, over_le=None):
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
    over = 0
    if over_le is not None:
        below = [c for le, c in buckets if le == float(over_le)]
        over = count - below[0] if below else 0
    top = ([le for le, c in buckets if c >= count] or [math.inf])[0] if count > 0 else float("nan")
    print("%d %.6g %s %s %d %s" % (count, mean, q(0.5), q(0.99), over, "inf" if top == math.inf else "%g" % top))


def main():
    cmd = sys.argv[1]
    if cmd == "hist":
        hist(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
    elif cmd == "value":
        v = samples(sys.argv[3]).get(sys.argv[2], 0.0)
        print("%d" % v if v == int(v) else "%g" % v)
    elif cmd == "json":
        with open(sys.argv[2]) as f:
            v = json.loads(f.read().strip().splitlines()[-1])
        for k in sys.argv[3].split("."):
            v = v.get(k) if isinstance(v, dict) else None
        print("null" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else v))
    elif cmd == "worst":
        rows = []
        with open(sys.argv[2]) as f:
            for line in f:
                p = line.split()
                if len(p) == 5 and p[0].isdigit():
                    rows.append((float(p[3]), float(p[4]), int(p[0]), int(p[1])))
        rows = [r for r in rows if r[3] >= 100] or rows  # ignore the last, partial second
        if rows:
            w = max(rows)
            print("%d %.2f %.2f" % (w[2], w[0], w[1]))
        else:
            print("- nan nan")
    elif cmd == "freeport":
        print(free_port())
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
