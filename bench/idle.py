"""Idle keep-alive connections: a small asyncio (+ ssl) client, run as its own process.

    python -m bench.idle --port P --n 10000 [--tls]

Opens N connections (at most --parallel handshakes at once), sends one
`GET /tiny` on each and reads the answer, so every connection is past the
handshake and idle in keep-alive. Then prints one JSON line
{"phase": "opened", ...} and waits for a line on stdin; then it counts how many
connections the server has closed meanwhile, prints {"phase": "final", ...},
closes everything and exits. Raises its own RLIMIT_NOFILE.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time

from .proc import raise_nofile

REQUEST = b"GET /tiny HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def _open_one(host, port, sslctx, timeout):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=sslctx,
                                server_hostname="localhost" if sslctx else None,
                                limit=16384), timeout)
    try:
        writer.write(REQUEST)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError("status " + head.split(b"\r\n", 1)[0].decode(errors="replace"))
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await asyncio.wait_for(reader.readexactly(length), timeout)
        if b"connection: close" in head.lower():
            raise RuntimeError("server answered Connection: close")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def main_async(args) -> int:
    sslctx = None
    if args.tls:
        sslctx = ssl.create_default_context()
        sslctx.check_hostname = False
        sslctx.verify_mode = ssl.CERT_NONE
    sem = asyncio.Semaphore(args.parallel)
    conns = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + args.open_timeout

    async def one():
        if time.monotonic() > deadline:
            errors["open phase deadline"] = errors.get("open phase deadline", 0) + 1
            return
        async with sem:
            try:
                conns.append(await _open_one(args.host, args.port, sslctx, args.timeout))
            except Exception as e:  # noqa: BLE001 - counted by kind
                key = "%s: %s" % (type(e).__name__, str(e)[:80])
                errors[key] = errors.get(key, 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args.n)))
    opened = len(conns)
    print(json.dumps({"phase": "opened", "opened": opened, "wanted": args.n,
                      "seconds": round(time.monotonic() - t0, 2),
                      "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5])}),
          flush=True)
    # Wait for the parent (it measures the server's memory meanwhile).
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline),
                               args.hold_timeout)
    except asyncio.TimeoutError:
        pass
    await asyncio.sleep(0)
    alive = sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())
    print(json.dumps({"phase": "final", "opened": opened, "alive": alive}), flush=True)
    for _r, w in conns:
        w.transport.abort()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.idle")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--parallel", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=20.0, help="per connection open+request")
    ap.add_argument("--open-timeout", type=float, default=180.0, help="whole open phase")
    ap.add_argument("--hold-timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    got = raise_nofile(args.n + 1024)
    if got < args.n + 100:
        print(json.dumps({"phase": "opened", "opened": 0, "wanted": args.n,
                          "errors": {"RLIMIT_NOFILE only %d" % got: 1}}), flush=True)
        return 1
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
