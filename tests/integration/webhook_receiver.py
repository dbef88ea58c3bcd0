#!/usr/bin/env python3
"""A real webhook receiver for the outbox tests (tests/unit/outbox_delivery_test.c).

  webhook_receiver.py --port P --secret S [--secret S2 ...] [--state FILE]
                      [--fail-first N] [--fail-status CODE] [--retry-after SECONDS]
                      [--status CODE] [--redirect] [--delay-first SECONDS]

POST to any path is a delivery. The receiver checks X-Strata-Signature
(t=<unix s>,v1=<hex>[,v1=...]: valid when some v1 equals HMAC-SHA256 of
"<t>.<body>" under some --secret, and t is within 5 minutes), answers 401
when it is not, and otherwise records the Idempotency-Key: how many times it
was seen, and whether it was processed (answered 2xx), once per key as a
deduplicating receiver would.

  --fail-first N      the first N signed deliveries get --fail-status (500)
  --retry-after S     sent as Retry-After with those failures
  --status CODE       every delivery gets CODE (e.g. 404) instead of 200
  --redirect          every delivery gets 302 to /elsewhere
  --delay-first S     the first delivery is answered after S seconds

GET /_stats returns {requests, bad_signatures, keys: {key: count},
processed: {key: 1}, last: {...}, times: [unix s of each request]}. With
--state the counts survive a restart (stop with SIGTERM, start again on the
same port).
"""
import argparse
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20
MAX_SKEW_S = 300


class State:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.data = {"requests": 0, "bad_signatures": 0, "keys": {}, "processed": {},
                     "last": None, "times": []}
        if path and os.path.exists(path):
            with open(path, "r", encoding="utf-8") as f:
                self.data.update(json.load(f))

    def save(self):
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)


def verify(secrets, header, body):
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    t = [v for k, v in parts if k == "t"]
    v1 = [v for k, v in parts if k == "v1"]
    if len(t) != 1 or not v1 or not t[0].isdigit():
        return False, len(v1)
    if abs(time.time() - int(t[0])) > MAX_SKEW_S:
        return False, len(v1)
    msg = t[0].encode() + b"." + body
    for s in secrets:
        want = hmac.new(s.encode(), msg, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(want, got) for got in v1):
            return True, len(v1)
    return False, len(v1)


def make_handler(args, state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stderr.write("receiver: " + (fmt % a) + "\n")

        def answer(self, code, obj=None, headers=()):
            data = json.dumps(obj if obj is not None else {}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/_stats":
                with state.lock:
                    self.answer(200, state.data)
            else:
                self.answer(404, {"error": "no such path"})

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            if n < 0 or n > MAX_BODY:
                self.answer(413, {"error": "too large"})
                return
            body = self.rfile.read(n)
            ok, nsig = verify(args.secret, self.headers.get("X-Strata-Signature", ""), body)
            key = self.headers.get("Idempotency-Key", "")
            with state.lock:
                d = state.data
                d["requests"] += 1
                d["times"].append(time.time())
                if not ok:
                    d["bad_signatures"] += 1
                    state.save()
                else:
                    d["keys"][key] = d["keys"].get(key, 0) + 1
                    try:
                        event = json.loads(body).get("event")
                        status = json.loads(body).get("finding", {}).get("status")
                    except ValueError:
                        event = status = None
                    d["last"] = {"key": key, "event_header": self.headers.get("X-Strata-Event"),
                                 "event": event, "finding_status": status,
                                 "user_agent": self.headers.get("User-Agent"),
                                 "content_type": self.headers.get("Content-Type"),
                                 "delivery": self.headers.get("X-Strata-Delivery"),
                                 "v1_count": nsig, "path": self.path}
                    seen = sum(d["keys"].values())
                    state.save()
            if not ok:
                self.answer(401, {"error": "bad signature"})
                return
            if args.delay_first > 0 and seen == 1:
                time.sleep(args.delay_first)
            if seen <= args.fail_first:
                hdrs = [("Retry-After", str(args.retry_after))] if args.retry_after else []
                self.answer(args.fail_status, {"error": "failing on purpose"}, hdrs)
                return
            if args.redirect:
                self.answer(302, {}, [("Location", "/elsewhere")])
                return
            if 200 <= args.status < 300:
                with state.lock:
                    # Processing happens once per key however often it comes.
                    state.data["processed"].setdefault(key, 1)
                    state.save()
            self.answer(args.status, {"ok": args.status < 300})

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", action="append", required=True)
    ap.add_argument("--state")
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--fail-status", type=int, default=500)
    ap.add_argument("--retry-after", type=int, default=0)
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--redirect", action="store_true")
    ap.add_argument("--delay-first", type=float, default=0)
    args = ap.parse_args()
    state = State(args.state)
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args, state))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    srv.serve_forever()
    srv.server_close()


if __name__ == "__main__":
    main()
