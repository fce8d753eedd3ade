"""A local stand-in for the iconik API: answers every analysis POST at once and notes when it arrived.

    python bench/iconik_stub.py --port 18999

``POST /API/...`` answers ``201 {}`` (keep-alive honoured) and records the
arrival time (``time.monotonic()``, the same clock in every process on Linux)
and the asset id. ``GET /stats`` (``/stats?full`` adds every arrival time) answers the counts, the number of distinct
assets, the first and last arrival and how many came without the App-ID and
Auth-Token headers. One asyncio loop, no framework: it must never be the
bottleneck of the event-to-action benchmark.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

ASSET = re.compile(rb"/assets/([^/ ?]+)/")


class Stats:
    def __init__(self) -> None:
        self.count = 0
        self.assets: set[bytes] = set()
        self.first: float | None = None
        self.last: float | None = None
        self.unauthenticated = 0
        self.arrivals: list[float] = []

    def note(self, path: bytes, headers: dict[bytes, bytes]) -> None:
        now = time.monotonic()
        self.count += 1
        self.first = self.first if self.first is not None else now
        self.last = now
        self.arrivals.append(now)
        match = ASSET.search(path)
        if match:
            self.assets.add(match.group(1))
        if not headers.get(b"app-id") or not headers.get(b"auth-token"):
            self.unauthenticated += 1

    def as_json(self, full: bool) -> bytes:
        answer = {"count": self.count, "distinct_assets": len(self.assets), "first": self.first,
                  "last": self.last, "unauthenticated": self.unauthenticated}
        if full:
            answer["arrivals"] = self.arrivals
        return json.dumps(answer).encode()


def respond(status: str, body: bytes, keep_alive: bool) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode() + body


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: Stats) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.split(b"\r\n")
            method, path, version = (lines[0].split(b" ") + [b"", b""])[:3]
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0") or 0)
            if length:
                await reader.readexactly(length)
            keep_alive = headers.get(b"connection", b"").lower() != b"close" and version == b"HTTP/1.1"
            if method == b"GET" and path.startswith(b"/stats"):
                writer.write(respond("200 OK", stats.as_json(full=b"full" in path), keep_alive))
            elif method == b"POST":
                stats.note(path, headers)
                writer.write(respond("201 Created", b'{"status": "queued"}', keep_alive))
            else:
                writer.write(respond("404 Not Found", b'{"errors": ["not found"]}', keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    finally:
        writer.close()


async def main(port: int) -> None:
    stats = Stats()
    server = await asyncio.start_server(lambda r, w: serve_connection(r, w, stats), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
