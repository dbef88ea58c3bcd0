#!/usr/bin/env python3
"""Load generators of engine_scenarios_test.sh; each runs until SIGTERM.

  scen_load.py leak RATE CAP MAX_SECONDS
      grows this process' RSS by RATE bytes/s (one chunk every 100 ms, every
      page written, so it is resident) until it holds CAP bytes, then holds
      them; names itself NAME (comm); exits after MAX_SECONDS or when
      its parent is gone, so it never outlives the test.
  scen_load.py http BASE_URL RPS COUNTS_FILE
      requests a fixed mix of routes through the nginx edge at about RPS
      requests/s: per 10 requests 3 x /assets/N (N in 1..8, cached 10 min:
      hits), 1 x /home (cached 1 s: mostly hits), 3 x /news (the origin says
      no-cache: misses) and 3 x /api/products/N with a new N each time
      (misses), so about 40 % hit; writes {route: {cache_status: n}} (from
      X-Cache-Status) to COUNTS_FILE on exit.
  scen_load.py pg QPS PSQL_ARGS...
      feeds `psql PSQL_ARGS...` about QPS statements per second of
      SELECT * FROM orders WHERE customer_id = N (N varies) on one session.
"""
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse


def stop(*_):
    raise SystemExit(0)


def leak(rate, cap, max_s, name):
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
    except Exception:
        pass
    parent = os.getppid()
    held = []
    size = 0
    chunk = max(1, rate // 10)
    start = nxt = time.monotonic()
    while time.monotonic() - start < max_s and os.getppid() == parent:
        if size + chunk <= cap:
            held.append(b"\x5a" * chunk)  # written, so resident
            size += chunk
        nxt += 0.1
        time.sleep(max(0.0, nxt - time.monotonic()))


def http_load(base, rps, counts_file):
    u = urllib.parse.urlsplit(base)
    conn = None
    counts = {}
    product = random.randrange(10**6, 10**7)
    pattern = ["/assets/%d", "/news", "/api/products/%d", "/home", "/assets/%d",
               "/news", "/api/products/%d", "/assets/%d", "/news", "/api/products/%d"]
    routes = {"/assets/%d": "/assets/:id", "/api/products/%d": "/api/products/:id"}
    i = 0
    nxt = time.monotonic()
    parent = os.getppid()
    try:
        while os.getppid() == parent:
            p = pattern[i % len(pattern)]
            if p == "/assets/%d":
                path = p % (i % 8 + 1)
            elif p == "/api/products/%d":
                product += 1
                path = p % product
            else:
                path = p
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                st = r.getheader("X-Cache-Status", "-") if r.status == 200 else "HTTP%d" % r.status
            except (OSError, http.client.HTTPException) as e:
                st = "error:" + type(e).__name__
                conn = None
            c = counts.setdefault(routes.get(p, p), {})
            c[st] = c.get(st, 0) + 1
            i += 1
            nxt += 1.0 / rps
            time.sleep(max(0.0, nxt - time.monotonic()))
    finally:
        with open(counts_file + ".tmp", "w") as f:
            json.dump(counts, f)
        os.replace(counts_file + ".tmp", counts_file)


def pg_load(qps, psql_args):
    p = subprocess.Popen(["psql"] + psql_args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    parent = os.getppid()
    nxt = time.monotonic()
    try:
        while os.getppid() == parent and p.poll() is None:
            p.stdin.write(b"SELECT * FROM orders WHERE customer_id = %d;\n" % random.randrange(1000))
            p.stdin.flush()
            nxt += 1.0 / qps
            time.sleep(max(0.0, nxt - time.monotonic()))
    except BrokenPipeError:
        pass
    finally:
        try:
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    sys.exit(p.returncode if p.returncode and p.returncode > 0 else 0)


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    cmd = sys.argv[1]
    if cmd == "leak":
        leak(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    elif cmd == "http":
        http_load(sys.argv[2], float(sys.argv[3]), sys.argv[4])
    elif cmd == "pg":
        pg_load(float(sys.argv[2]), sys.argv[3:])
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
