#!/usr/bin/env python3
"""Hand-made envelopes over mutual TLS, for security_test.sh.

  sec_send.py send [options] --agent UUID --seq N
      builds a Frame (codec none) for agent UUID with seq N, wraps it in an
      envelope, signs it (--key-file, --key-hex) or not (--unsigned), sends it
      over one nng req0 request and prints the Ack as one JSON line:
      {"seq", "status", "status_name", "reason", "retry_after_ms"}.
      --envelope-agent UUID puts another id in the envelope than in the Frame.
  sec_send.py handshake [options]
      connects, completes the SP handshake and sends one request; prints
      {"ok": true, ...} when an Ack came back, {"ok": false, "error": ...}
      when the collector refused the connection (e.g. no or a foreign client
      certificate); exits 0 either way.

Connection options: --host H --port P [--ca CA --cert PEM --server-name NAME]
(--ca makes it TLS; --cert is the client certificate and key in one PEM file;
without --cert no client certificate is sent). --frame-host NAME names the
host in the Frame. The envelope layout and SP framing are hostile.py's.
"""
import argparse
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile  # noqa: E402  (same directory)

FLAG_SIGNED = 0x0001


def connect(args):
    raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
    s = raw
    if args.ca:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(args.ca)
        if args.cert:
            ctx.load_cert_chain(args.cert)
        ctx.check_hostname = args.server_name is not None
        s = ctx.wrap_socket(raw, server_hostname=args.server_name or args.host)
    s.sendall(hostile.sp_header(hostile.REQ0))
    peer = hostile.recv_exact(s, 8)
    if peer != hostile.sp_header(hostile.REP0):
        raise ConnectionError("unexpected SP handshake %r" % peer)
    return s


def read_key(args):
    if args.key_hex:
        return bytes.fromhex(args.key_hex.strip())
    if args.key_file:
        with open(args.key_file) as f:
            return bytes.fromhex(f.read().strip())
    return None


def build(args):
    agent = uuid.UUID(args.agent).bytes
    env_agent = uuid.UUID(args.envelope_agent).bytes if args.envelope_agent else agent
    payload = hostile.frame_for(agent, args.seq, hostile.gauge(name=b"sec.probe"),
                                host=args.frame_host.encode())
    key = None if args.unsigned else read_key(args)
    if key is None:
        return hostile.envelope(payload, agent=env_agent, seq=args.seq)
    env = hostile.envelope(payload, flags=FLAG_SIGNED, agent=env_agent, seq=args.seq)
    return env + hmac.new(key, env, hashlib.sha256).digest()


def cmd_send(args):
    env = build(args)
    s = connect(args)
    try:
        ack = hostile.request(s, 0x80000001, env)
    finally:
        s.close()
    ack["status_name"] = hostile.STATUS.get(ack["status"], str(ack["status"]))
    print(json.dumps(ack))
    return 0


def cmd_handshake(args):
    args.agent = args.agent or str(uuid.uuid4())
    args.seq = args.seq or 1
    try:
        s = connect(args)
        try:
            ack = hostile.request(s, 0x80000001, build(args))
        finally:
            s.close()
    except (OSError, ssl.SSLError, ConnectionError, ValueError) as e:
        print(json.dumps({"ok": False, "error": "%s: %s" % (type(e).__name__, e)}))
        return 0
    ack["status_name"] = hostile.STATUS.get(ack["status"], str(ack["status"]))
    print(json.dumps({"ok": True, **ack}))
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("send", "handshake"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--server-name")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--agent")
    p.add_argument("--envelope-agent")
    p.add_argument("--seq", type=int)
    p.add_argument("--key-file")
    p.add_argument("--key-hex")
    p.add_argument("--unsigned", action="store_true")
    p.add_argument("--frame-host", default="sec-probe")
    args = p.parse_args(argv[1:])
    if args.command == "send":
        if args.agent is None or args.seq is None:
            p.error("send needs --agent and --seq")
        return cmd_send(args)
    return cmd_handshake(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
