#!/usr/bin/env python3
"""The source design's C++ risk client, in Python: one JSON order per REQ, reply in 16 bytes.

usage: old_risk_client.py ENDPOINT ORDERS_JSONL [TIMEOUT_MS]

ORDERS_JSONL holds one request per line (sent as is). Each reply is read with zmq_recv's
semantics into a fixed 16-byte buffer (pyzmq's recv_into): a reply longer than the buffer is
cut, and the C++ code, which then writes a terminator at buf[n], would overflow. The stand-in
records that as an overflow and stops like the crash it stands for (exit code 3).
Prints {"sent", "ok", "reject", "timeout", "overflow", "replies"} as one JSON line. Reply
timeout: TIMEOUT_MS (default 100 ms, as in the source design; tests on a busy machine give
more); a timeout counts as a reject and the socket is reopened (Lazy Pirate).
"""
import json
import sys

import zmq

BUF_LEN = 16


def main():
    endpoint, path = sys.argv[1], sys.argv[2]
    timeout_ms = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    ctx = zmq.Context()

    def fresh():
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, timeout_ms)
        s.connect(endpoint)
        return s

    sock = fresh()
    buf = bytearray(BUF_LEN)
    counts = {"sent": 0, "ok": 0, "reject": 0, "timeout": 0, "overflow": 0, "replies": {}}
    code = 0
    with open(path, "rb") as f:
        lines = [l.rstrip(b"\n") for l in f if l.strip()]
    for line in lines:
        sock.send(line)
        counts["sent"] += 1
        try:
            n = sock.recv_into(buf)
        except zmq.Again:
            counts["timeout"] += 1
            counts["reject"] += 1
            sock.close()
            sock = fresh()
            continue
        if n > BUF_LEN:
            counts["overflow"] += 1
            sys.stderr.write("reply of %d bytes overflows the %d-byte buffer: %r\n"
                             % (n, BUF_LEN, bytes(buf)))
            code = 3
            break
        text = bytes(buf[:n]).decode("ascii", "replace")
        counts["replies"][text] = counts["replies"].get(text, 0) + 1
        if text == "OK":
            counts["ok"] += 1
        else:
            counts["reject"] += 1
    print(json.dumps(counts), flush=True)
    sock.close()
    ctx.term()
    sys.exit(code)


if __name__ == "__main__":
    main()
