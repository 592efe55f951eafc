#!/usr/bin/env python3
"""A TCP relay that delays one direction: what `tc netem delay` does on a host's interface, for
kernels without sch_netem (scripts/multihost.sh uses it in the risk host's namespace then).

    delay_relay.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS

Every connection accepted on LISTEN is forwarded to TARGET. Bytes from TARGET back to the client
are held DELAY_MS before they are written (in order), as netem on the target host's egress
holds its packets; bytes towards TARGET pass at once. It prints "relay ready" once listening.
The bytes are not looked at (CURVE traffic passes as it is).
"""
import asyncio
import sys
import time


async def pump(reader, writer, delay_s):
    """Copies reader to writer, each chunk written delay_s after it was read."""
    queue = asyncio.Queue()

    async def sender():
        while True:
            due, chunk = await queue.get()
            if chunk is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(sender())
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            await queue.put((time.monotonic() + delay_s, chunk))
    except ConnectionError:
        pass
    await queue.put((0.0, None))
    try:
        await task
    except ConnectionError:
        pass


async def main():
    lhost, lport, thost, tport, delay_ms = sys.argv[1:6]
    delay_s = float(delay_ms) / 1000.0

    async def handle(client_r, client_w):
        try:
            target_r, target_w = await asyncio.open_connection(thost, int(tport))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            pump(client_r, target_w, 0.0),
            pump(target_r, client_w, delay_s),
        )

    server = await asyncio.start_server(handle, lhost, int(lport))
    print("relay ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
