"""A real HTTP file server for download tests, with the behaviours the path asks for.

``/<mode>/<name>`` serves ``<root>/<name>``:

- ``ranged``: honours ``Range`` (206 with ``Content-Range``), advertises ``Accept-Ranges``;
- ``plain``: ignores ``Range``, always the whole file with 200;
- ``cut``: like ``ranged``, but the first request for each name sends half the
  body and drops the connection;
- ``cut-plain``: like ``plain``, with the same cut on the first request;
- ``throttle``: like ``ranged``, at most ``throttle_bps`` bytes a second (read
  for every chunk, so a test can change it mid-transfer; 0: no limit);
- ``gzip``: the whole file gzip-compressed, with ``Content-Encoding: gzip`` (whatever the
  request's ``Accept-Encoding`` says, as some servers do);
- ``redirect``: ``/redirect/<anything>?to=<url>`` answers 302 to that URL;
- ``status``: ``/status/<code>`` answers with that status.

Every request is recorded with its ``Range`` header and how many body bytes were sent
(counted as they go, so a transfer in progress shows how far it got).
"""
from __future__ import annotations

import gzip
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 64 * 1024
THROTTLED_CHUNK = 16 * 1024


def make_file(path: Path, size: int) -> bytes:
    """Write ``size`` random bytes to ``path`` and return them (for byte-for-byte comparisons)."""
    content = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return content


def make_large_file(path: Path, size: int) -> None:
    """Write ``size`` bytes without holding them in memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        written = 0
        block = os.urandom(1024 * 1024)
        while written < size:
            part = block[: min(len(block), size - written)]
            file.write(part)
            written += len(part)


@dataclass
class Served:
    mode: str
    name: str
    range: str | None
    status: int
    bytes_sent: int = 0


@dataclass
class FileServer:
    root: Path
    tls: tuple[Path, Path] | None = None  # (certificate, key): serve HTTPS
    requests: list[Served] = field(default_factory=list)
    throttle_bps: int = 1_000_000  # for the ``throttle`` mode

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._cut_done: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server._serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, mode: str, name: str) -> str:
        return f"{self.base}/{mode}/{name}"

    def served(self, name: str) -> list[Served]:
        with self._lock:
            return [request for request in self.requests if request.name == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        mode, _, name = parts.path.lstrip("/").partition("/")
        name = unquote(name)
        if mode == "redirect":
            target = parse_qs(parts.query).get("to", [""])[0]
            self._record(Served(mode, name, None, 302))
            handler.send_response(302)
            handler.send_header("Location", target)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if mode == "status":
            self._record(Served(mode, name, None, int(name)))
            handler.send_response(int(name))
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        path = self.root / name
        if mode == "gzip" and path.is_file():
            body = gzip.compress(path.read_bytes())
            record = Served(mode, name, handler.headers.get("Range"), 200)
            self._record(record)
            handler.send_response(200)
            handler.send_header("Content-Encoding", "gzip")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            record.bytes_sent = len(body)
            return
        if mode not in ("ranged", "plain", "cut", "cut-plain", "throttle") or not path.is_file():
            self._record(Served(mode, name, None, 404))
            handler.send_error(404)
            return
        size = path.stat().st_size
        ranges = mode in ("ranged", "cut", "throttle")
        requested = handler.headers.get("Range")
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", requested or "")
        if ranges and match:
            start = int(match.group(1))
            if start >= size:
                self._record(Served(mode, name, requested, 416))
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{size}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
        status = 206 if start else 200
        with self._lock:
            cut = mode.startswith("cut") and name not in self._cut_done
            self._cut_done.add(name)
        record = Served(mode, name, requested, status)
        self._record(record)
        handler.send_response(status)
        handler.send_header("Content-Length", str(size - start))
        if ranges:
            handler.send_header("Accept-Ranges", "bytes")
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        handler.end_headers()
        limit = (size - start) // 2 if cut else size - start
        throttled = mode == "throttle"
        with open(path, "rb") as file:
            file.seek(start)
            while record.bytes_sent < limit:
                chunk = file.read(min(THROTTLED_CHUNK if throttled else CHUNK, limit - record.bytes_sent))
                if not chunk:
                    break
                try:
                    handler.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):  # the client went away (killed, say)
                    handler.close_connection = True
                    return
                record.bytes_sent += len(chunk)
                if throttled and self.throttle_bps:
                    time.sleep(len(chunk) / self.throttle_bps)
        if cut:
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early

    def _record(self, served: Served) -> None:
        with self._lock:
            self.requests.append(served)
