#!/usr/bin/env python3
"""The source design's order-queue consumer, in Python: PULL, one message per order.

usage: old_pull_consumer.py BIND_ENDPOINT FORMAT EXPECTED [IDLE_S]

Binds PULL (port * or 0: a free one; prints "listening on <endpoint>"), receives until
EXPECTED messages have arrived, or nothing has for IDLE_S seconds (default 10), then prints
one JSON line {"messages", "orders", "bad", "order_ids"}. FORMAT json: each message must be a
JSON object with order_id, symbol, quantity and price (the source design's fields plus
order_id); `bad` counts those that are not. FORMAT order: each message is one order in our
egress frame (magic, version, count = 1); `order_ids` are read from it.
"""
import json
import struct
import sys

import zmq


def main():
    bind, fmt, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    idle_ms = int(float(sys.argv[4]) * 1000) if len(sys.argv) > 4 else 10000
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    if bind.endswith(":*") or bind.endswith(":0"):
        base = bind.rsplit(":", 1)[0]
        endpoint = "%s:%d" % (base, sock.bind_to_random_port(base))
    else:
        sock.bind(bind)
        endpoint = bind
    print("listening on %s" % endpoint, flush=True)
    counts = {"messages": 0, "orders": 0, "bad": 0, "order_ids": []}
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while counts["messages"] < expected:
        if not poller.poll(idle_ms):
            break
        msg = sock.recv()
        counts["messages"] += 1
        if fmt == "json":
            try:
                ev = json.loads(msg)
                for k in ("order_id", "symbol", "quantity", "price"):
                    if k not in ev:
                        raise KeyError(k)
                float(ev["price"])
                counts["order_ids"].append(int(ev["order_id"]))
                counts["orders"] += 1
            except (ValueError, KeyError, TypeError):
                counts["bad"] += 1
        else:
            # Our egress frame: 16-byte header (magic, version, count), 64-byte entries of
            # input_seq u64, journal_seq u64, then the 48-byte order (order_id first).
            if len(msg) < 16:
                counts["bad"] += 1
                continue
            count = struct.unpack_from("<I", msg, 8)[0]
            if count != 1 or len(msg) != 16 + 64:
                counts["bad"] += 1
                continue
            counts["order_ids"].append(struct.unpack_from("<Q", msg, 16 + 16)[0])
            counts["orders"] += 1
    print(json.dumps(counts), flush=True)
    sock.close()
    ctx.term()


if __name__ == "__main__":
    main()
