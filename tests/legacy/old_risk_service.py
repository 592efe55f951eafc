#!/usr/bin/env python3
"""The source design's JSON risk service, in Python: REP, one JSON order per request.

usage: old_risk_service.py BIND_ENDPOINT MAX_QTY [REJECT_TEXT]

Replies `OK`, or REJECT_TEXT (default `REJECT`) when `quantity` > MAX_QTY. A request that is
not a JSON object with "symbol", "quantity" and "price" gets `REJECT bad request` and is
counted as bad; it reads into a 512-byte buffer as the source design's service did, and a
longer request is counted as an overflow. Prints "listening on <endpoint>" once bound (a
port of 0 or * picks a free one); on SIGTERM/SIGINT prints one JSON line
{"requests", "ok", "reject", "bad", "overflow", "fields"} and exits 0.
"""
import json
import signal
import sys

import zmq

stop = False


def on_signal(_sig, _frame):
    global stop
    stop = True


def main():
    bind, max_qty = sys.argv[1], int(sys.argv[2])
    reject_text = (sys.argv[3] if len(sys.argv) > 3 else "REJECT").encode()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    if bind.endswith(":*") or bind.endswith(":0"):
        port = sock.bind_to_random_port(bind.rsplit(":", 1)[0])
        endpoint = "%s:%d" % (bind.rsplit(":", 1)[0], port)
    else:
        sock.bind(bind)
        endpoint = bind
    print("listening on %s" % endpoint, flush=True)
    counts = {"requests": 0, "ok": 0, "reject": 0, "bad": 0, "overflow": 0, "fields": []}
    buf = bytearray(512)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while not stop:
        try:
            if not poller.poll(50):
                continue
            n = sock.recv_into(buf)
        except zmq.ZMQError:
            continue
        counts["requests"] += 1
        if n > len(buf):
            counts["overflow"] += 1
            sock.send(b"REJECT bad request")
            continue
        try:
            req = json.loads(bytes(buf[:n]))
            qty = int(req["quantity"])
            float(req["price"])
            str(req["symbol"])
            fields = sorted(req.keys())
            if fields not in counts["fields"]:
                counts["fields"].append(fields)
        except (ValueError, KeyError, TypeError):
            counts["bad"] += 1
            sock.send(b"REJECT bad request")
            continue
        if qty > max_qty:
            counts["reject"] += 1
            sock.send(reject_text)
        else:
            counts["ok"] += 1
            sock.send(b"OK")
    print(json.dumps(counts), flush=True)
    sock.close()
    ctx.term()


if __name__ == "__main__":
    main()
