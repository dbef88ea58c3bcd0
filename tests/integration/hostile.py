#!/usr/bin/env python3
"""A hostile peer of the collector's ingest port, for hostile_test.sh.

  hostile.py envelopes HOST PORT   well-formed nng req0 requests carrying bad
                                   envelopes over one connection; prints one
                                   JSON line per request with the Ack
  hostile.py count                 how many requests `envelopes` sends
  hostile.py valid HOST PORT       the control: one valid frame twice (a new
                                   agent, host hostile-control): OK, DUPLICATE
  hostile.py garbage HOST PORT S   S seconds of junk connections: random bytes,
                                   wrong SP handshakes, absurd SP lengths,
                                   random request bodies, half-sent messages,
                                   and a few idle half-open connections

The SP protocol over TCP (as nng speaks it): both sides send an 8-byte
header b"\\x00SP\\x00" + protocol (u16 BE: 0x30 req0, 0x31 rep0) + b"\\x00\\x00";
then each message is a u64 BE length and a body. A req0 body starts with a
4-byte request id whose high bit is set; the rep0 reply echoes it before the
payload, here a protobuf strata.v1.Ack {1 seq, 2 status, 3 reason,
4 retry_after_ms}.
"""
import json
import os
import socket
import struct
import sys
import time

REQ0 = 0x30
REP0 = 0x31
STATUS = {1: "OK", 2: "DUPLICATE", 3: "RETRY_LATER", 4: "REJECTED"}


def sp_header(proto):
    return b"\x00SP\x00" + struct.pack(">H", proto) + b"\x00\x00"


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_bytes(field, data):
    return varint(field << 3 | 2) + varint(len(data)) + data


def pb_varint(field, v):
    return varint(field << 3) + varint(v)


def envelope(payload, *, magic=b"STRA", version=1, codec=0, flags=0, agent=None, seq=1,
             raw_len=None, crc=None):
    agent = agent if agent is not None else os.urandom(16)
    raw_len = len(payload) if raw_len is None else raw_len
    crc = crc32c(payload) if crc is None else crc
    return (magic + bytes([version, codec]) + struct.pack(">H", flags) + agent +
            struct.pack(">QII", seq, raw_len, crc) + payload)


def decode_ack(buf):
    ack = {"seq": 0, "status": 0, "reason": "", "retry_after_ms": 0}
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = read_varint(buf, i)
            if field == 1:
                ack["seq"] = v
            elif field == 2:
                ack["status"] = v
            elif field == 4:
                ack["retry_after_ms"] = v
        elif wire == 2:
            n, i = read_varint(buf, i)
            if field == 3:
                ack["reason"] = buf[i:i + n].decode("utf-8", "replace")
            i += n
        else:
            raise ValueError("unexpected wire type %d in Ack" % wire)
    return ack


def read_varint(buf, i):
    shift = v = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("connection closed after %d of %d bytes" % (len(out), n))
        out += chunk
    return bytes(out)


def connect(host, port, timeout=10.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(sp_header(REQ0))
    peer = recv_exact(s, 8)
    if peer != sp_header(REP0):
        raise ConnectionError("unexpected SP handshake %r" % peer)
    return s


def request(s, req_id, payload):
    body = struct.pack(">I", req_id) + payload
    s.sendall(struct.pack(">Q", len(body)) + body)
    n = struct.unpack(">Q", recv_exact(s, 8))[0]
    reply = recv_exact(s, n)
    if struct.unpack(">I", reply[:4])[0] != req_id:
        raise ValueError("reply to request %#x echoes %r" % (req_id, reply[:4]))
    return decode_ack(reply[4:])


def frame_for(agent, seq, series=b"", host=b"hostile"):
    """A minimal strata.v1.Frame {agent_id, seq, sent_unix_ms, agent{host}, series}."""
    host = pb_bytes(1, host)
    return (pb_bytes(1, agent) + pb_varint(2, seq) + pb_varint(3, int(time.time() * 1000)) +
            pb_bytes(4, host) + series)


def gauge(name=b"hostile.gauge", value=1.0, start_ms=None):
    """Frame field 5: one Series {name, layer 5, unit, kind GAUGE, start, interval, values}."""
    start_ms = int(time.time() * 1000) - 1000 if start_ms is None else start_ms
    s = (pb_bytes(1, name) + pb_varint(3, 5) + pb_bytes(4, b"B") + pb_varint(5, 2) +
         pb_varint(6, start_ms) + pb_varint(7, 1000) + pb_bytes(10, struct.pack("<d", value)))
    return pb_bytes(5, s)


def frame_envelope(series):
    """A well-formed envelope (codec none) around a Frame that names its agent."""
    agent = os.urandom(16)
    return envelope(frame_for(agent, 3, series), agent=agent, seq=3)


def cases():
    """(name, expected reason label or None for any, envelope bytes)."""
    junk = os.urandom(64)
    valid = envelope(junk, codec=1)
    a, b = os.urandom(16), os.urandom(16)
    good_frame = frame_for(a, 7)
    return [
        ("bad_magic", "env_magic", b"XTRA" + valid[4:]),
        ("bad_crc", "env_crc", envelope(junk, codec=1, crc=crc32c(junk) ^ 0x1)),
        ("truncated_header", "env_truncated", valid[:20]),
        ("empty_body", "env_truncated", b""),
        ("oversize_declared_length", "env_length", envelope(junk, codec=1, raw_len=0xFFFFFFFF)),
        ("bad_version", "env_version", envelope(junk, version=9)),
        ("bad_codec", "env_codec", envelope(junk, codec=7)),
        ("bad_flags", "env_flags", envelope(junk, flags=0x8000)),
        ("zero_seq", "env_seq", envelope(junk, seq=0)),
        ("envelope_over_4mib", "env_toobig", envelope(os.urandom(16), codec=1) + bytes(5 << 20)),
        ("length_mismatch_codec_none", "zstd_length", envelope(junk, raw_len=len(junk) + 1)),
        ("zstd_garbage", None, envelope(junk, codec=1)),
        ("protobuf_garbage", "frame_decode", envelope(b"\xff" * 48)),
        ("frame_names_other_agent", "frame_agent", envelope(good_frame, agent=b, seq=7)),
        ("value_not_finite", "frame_number", frame_envelope(gauge(value=float("nan")))),
        ("timestamp_in_1970", "frame_time", frame_envelope(gauge(start_ms=1000))),
        ("name_not_utf8", "frame_utf8", frame_envelope(gauge(name=b"bad\xff\xfename"))),
        ("name_over_128_bytes", "frame_name", frame_envelope(gauge(name=b"n" * 200))),
    ]


def run_envelopes(host, port):
    s = connect(host, port)
    ok = True
    for i, (name, expect, env) in enumerate(cases()):
        try:
            ack = request(s, 0x80000001 + i, env)
        except (OSError, ValueError, ConnectionError) as e:
            print(json.dumps({"case": name, "expect": expect, "error": str(e)}), flush=True)
            ok = False
            # A dropped connection is itself a finding; go on on a new one.
            s = connect(host, port)
            continue
        ack["status_name"] = STATUS.get(ack["status"], str(ack["status"]))
        print(json.dumps({"case": name, "expect": expect, **ack}), flush=True)
    s.close()
    return 0 if ok else 1


def run_valid(host, port):
    """The control: a valid frame (codec none) is OK, and the same again DUPLICATE."""
    agent = os.urandom(16)
    env = envelope(frame_for(agent, 1, gauge(), host=b"hostile-control"), agent=agent, seq=1)
    s = connect(host, port)
    for i, expect in enumerate(("OK", "DUPLICATE")):
        ack = request(s, 0x80000001 + i, env)
        ack["status_name"] = STATUS.get(ack["status"], str(ack["status"]))
        print(json.dumps({"case": "valid_frame_%d" % (i + 1), "expect": expect, **ack}))
    s.close()
    return 0


def junk_connection(host, port, kind):
    try:
        s = socket.create_connection((host, port), timeout=3.0)
    except OSError:
        return "connect failed"
    try:
        if kind == 0:    # random bytes, no handshake
            s.sendall(os.urandom(4096))
        elif kind == 1:  # a handshake for the wrong protocol (pub0)
            s.sendall(sp_header(0x20) + os.urandom(64))
        elif kind == 2:  # the right handshake, then an absurd message length
            s.sendall(sp_header(REQ0) + struct.pack(">Q", 1 << 62) + os.urandom(64))
        elif kind == 3:  # a length over the receive limit (8 MiB), partly sent
            s.sendall(sp_header(REQ0) + struct.pack(">Q", 9 << 20) + os.urandom(1 << 16))
        elif kind == 4:  # a random request body
            body = b"\x80\x00\x00\x09" + os.urandom(200)
            s.sendall(sp_header(REQ0) + struct.pack(">Q", len(body)) + body)
        elif kind == 5:  # a request id without the high bit
            body = b"\x00\x00\x00\x05" + os.urandom(60)
            s.sendall(sp_header(REQ0) + struct.pack(">Q", len(body)) + body)
        elif kind == 6:  # half a handshake, then hang up
            s.sendall(b"\x00S")
        elif kind == 7:  # half a message, then hang up
            s.sendall(sp_header(REQ0) + struct.pack(">Q", 1000) + os.urandom(10))
        try:
            s.settimeout(0.3)
            s.recv(64)
        except OSError:
            pass
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
    return "ok"


def run_garbage(host, port, seconds):
    # A few connections sit idle with half a handshake the whole time.
    idle = []
    for _ in range(4):
        try:
            c = socket.create_connection((host, port), timeout=3.0)
            c.sendall(b"\x00SP")
            idle.append(c)
        except OSError:
            pass
    results = {}
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for kind in range(8):
            res = junk_connection(host, port, kind)
            results[res] = results.get(res, 0) + 1
            n += 1
        time.sleep(0.01)
    for c in idle:
        c.close()
    print(json.dumps({"connections": n, "idle": len(idle), "results": results}))
    return 0


def main(argv):
    if len(argv) == 2 and argv[1] == "count":
        print(len(cases()))
        return 0
    if len(argv) == 4 and argv[1] == "valid":
        return run_valid(argv[2], int(argv[3]))
    if len(argv) == 4 and argv[1] == "envelopes":
        return run_envelopes(argv[2], int(argv[3]))
    if len(argv) == 5 and argv[1] == "garbage":
        return run_garbage(argv[2], int(argv[3]), float(argv[4]))
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
