#!/usr/bin/env python3
"""The source design's "Titanic" audit service, in Python: binds SUB, hash-chains every event.

usage: old_audit_service.py BIND_ENDPOINT STORE_FILE

Binds a SUB socket (subscribed to everything; the engine connects its PUB to it), receives
one JSON event per message, hashes it with SHA-256 chained to the previous one
(chain = SHA-256(chain || message)) and appends the message to STORE_FILE (its permanent
storage) before counting it. Prints "listening on <endpoint>" once bound (port * or 0: a free
one). On SIGTERM/SIGINT it drains what is queued and prints one JSON line:
{"received", "bad", "chain", "seqs", "missing_keys"}: `seqs` the record sequence numbers
received, `bad` messages that are not a JSON object with order_id (for decisions), seq,
verdict, reason and hash.
"""
import hashlib
import json
import signal
import sys

import zmq

stop = False


def on_signal(_sig, _frame):
    global stop
    stop = True


def main():
    bind, store = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVHWM, 0)
    if bind.endswith(":*") or bind.endswith(":0"):
        base = bind.rsplit(":", 1)[0]
        endpoint = "%s:%d" % (base, sock.bind_to_random_port(base))
    else:
        sock.bind(bind)
        endpoint = bind
    print("listening on %s" % endpoint, flush=True)
    chain = b"\0" * 32
    counts = {"received": 0, "bad": 0, "seqs": [], "missing_keys": []}
    out = open(store, "ab")
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    draining = False
    while True:
        if stop and not draining:
            draining = True
        try:
            ready = poller.poll(50)
        except zmq.ZMQError:
            continue
        if not ready:
            if draining:
                break
            continue
        msg = sock.recv()
        out.write(msg + b"\n")
        out.flush()
        chain = hashlib.sha256(chain + msg).digest()
        counts["received"] += 1
        try:
            ev = json.loads(msg)
            need = ["seq", "hash", "kind_name"]
            if ev.get("kind_name") == "decision":
                need += ["order_id", "verdict", "reason"]
            missing = [k for k in need if k not in ev]
            if missing:
                counts["bad"] += 1
                counts["missing_keys"].append(missing)
                continue
            counts["seqs"].append(int(ev["seq"]))
        except (ValueError, TypeError):
            counts["bad"] += 1
    counts["chain"] = chain.hex()
    out.close()
    print(json.dumps(counts), flush=True)
    sock.close()
    ctx.term()


if __name__ == "__main__":
    main()
