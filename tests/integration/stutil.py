#!/usr/bin/env python3
"""Small helpers for the integration tests (see lib.sh).

  stutil.py ports N     N distinct free loopback TCP ports, one per line
  stutil.py spool DIR   what an agent's spool directory holds, as JSON:
                        {id, acked_through, next_seq, dropped, records,
                         first_seq, last_seq, unacked, segments}

The spool is read from disk only (agent/spool.h describes the layout), so it
is exact once the agent has stopped and a lower bound of progress while it
runs: the cursor is rewritten only on close or when segments go away.
"""
import json
import os
import socket
import struct
import sys


def free_ports(n):
    # Hold every socket open until all are bound so the ports are distinct.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def read_cursor(path):
    cur = {"acked_through": 0, "next_seq": 0, "dropped": 0}
    try:
        with open(path, "r", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] in cur:
                    cur[parts[0]] = int(parts[1])
    except FileNotFoundError:
        pass
    return cur


def read_segment(path):
    """Seqs of the complete records of one segment; a torn tail is ignored."""
    seqs = []
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off + 16 <= len(data):
        length, _crc, seq = struct.unpack_from("<IIQ", data, off)
        if length > (4 << 20) or off + 16 + length > len(data) or seq == 0:
            break
        seqs.append(seq)
        off += 16 + length
    return seqs


def spool_state(d):
    cur = read_cursor(os.path.join(d, "cursor"))
    seqs = []
    segments = 0
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".seg"))
    except FileNotFoundError:
        names = []
    for name in names:
        try:
            seqs.extend(read_segment(os.path.join(d, name)))
            segments += 1
        except FileNotFoundError:
            pass  # deleted by the running agent in the meantime
    agent_id = ""
    try:
        with open(os.path.join(d, "agent.id"), "r", encoding="ascii") as f:
            agent_id = f.read().strip()
    except FileNotFoundError:
        pass
    last = max(seqs + [cur["next_seq"] - 1, cur["acked_through"], 0])
    unacked = sorted(set(s for s in seqs if s > cur["acked_through"]))
    return {
        "id": agent_id,
        "acked_through": cur["acked_through"],
        "next_seq": cur["next_seq"],
        "dropped": cur["dropped"],
        "records": len(seqs),
        "first_seq": min(seqs) if seqs else 0,
        "last_seq": last,
        "unacked": len(unacked),
        "segments": segments,
    }


def main(argv):
    if len(argv) == 3 and argv[1] == "ports":
        print("\n".join(str(p) for p in free_ports(int(argv[2]))))
        return 0
    if len(argv) == 3 and argv[1] == "spool":
        print(json.dumps(spool_state(argv[2]), sort_keys=True))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
