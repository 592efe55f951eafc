#!/usr/bin/env python3
"""Independent verifier of the audit journal, written from docs/formats/audit-log.md alone.

Usage: verify_journal.py DIR
Prints `ok records=N head=HEX` and exits 0, or `bad FILE offset=O seq=S: WHAT` and exits 1.
Checks sections 2, 3 and 5 of the format (headers, records, chain, links, zero tail); it does
not check checkpoint signatures (that needs an Ed25519 library).
"""
import hashlib
import os
import re
import struct
import sys

GENESIS = bytes(32)
HEADER = struct.Struct("<8sHHIQQQQ32s16s32s")  # 128 bytes
RECORD = struct.Struct("<IIQQHHI")  # 32 bytes
PAYLOAD_MAX = 65536


def bad(path, off, seq, what):
    print(f"bad {path} offset={off} seq={seq}: {what}")
    sys.exit(1)


def main(d):
    names = sorted((int(n[:20]), n) for n in os.listdir(d) if re.fullmatch(r"\d{20}\.seg", n))
    odd = [n for first, n in names if first > 2**64 - 1]  # reported after the chain
    names = [(first, n) for first, n in names if first <= 2**64 - 1]
    if not names and not odd:
        print(f"no segments in {d}")
        sys.exit(2)
    prev, expect, records = GENESIS, 1, 0
    for index, (first, name) in enumerate(names):
        path = os.path.join(d, name)
        b = open(path, "rb").read()
        if len(b) < 128:
            bad(path, 0, expect, "short file")
        magic, ver, hlen, flags, size, idx, fseq, _created, phash, res, hhash = HEADER.unpack(b[:128])
        if magic != b"TTNCJRNL" or ver != 1 or hlen != 128 or flags or any(res):
            bad(path, 0, expect, "bad header")
        if hashlib.sha256(b[:96]).digest() != hhash:
            bad(path, 0, expect, "header hash")
        if size % 4096 or not 4096 <= size <= 1 << 30:
            bad(path, 16, expect, "segment_size breaks the size rule")
        if size != len(b) or fseq != first or idx != index:
            bad(path, 0, expect, "header fields")
        if fseq != expect or phash != prev:
            bad(path, 0, expect, "link to the previous segment")
        off = 128
        while off + 64 <= len(b):
            rlen, plen, seq, _ts, _kind, rflags, rres = RECORD.unpack(b[off:off + 32])
            if rlen == 0:
                break
            want = 32 + (plen + 7) // 8 * 8 + 32
            if plen > PAYLOAD_MAX or rlen != want or rflags or rres or off + rlen > len(b):
                bad(path, off, expect, "bad record header")
            if seq != expect:
                bad(path, off, expect, f"seq {seq}")
            if any(b[off + 32 + plen:off + rlen - 32]):
                bad(path, off, expect, "padding")
            h = hashlib.sha256(prev + b[off:off + rlen - 32]).digest()
            if h != b[off + rlen - 32:off + rlen]:
                bad(path, off, expect, "hash mismatch")
            prev, expect, records, off = h, expect + 1, records + 1, off + rlen
        if any(b[off:]):
            bad(path, off, expect, "data after the end of the chain")
    if odd:
        bad(os.path.join(d, odd[0]), 0, None, "segment name above 2^64-1")
    print(f"ok records={records} head={prev.hex()}")


if __name__ == "__main__":
    main(sys.argv[1])
