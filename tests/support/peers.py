"""Real HTTP servers the listener talks to in tests: a recording stand-in for APIs."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RecordingServer:
    """Answers with the queued (status, body) pairs, then with ``default``; records every request."""

    default: tuple[int, dict[str, Any]] = (201, {"status": "ok"})
    responses: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    delay: float = 0.0  # seconds to wait before answering, to keep a job running

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with recorder._lock:
                    recorder.requests.append(Recorded("POST", self.path, dict(self.headers), body))
                    status, answer = recorder.responses.pop(0) if recorder.responses else recorder.default
                time.sleep(recorder.delay)  # recorded first: a test can see the request has started
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def queue(self, responses: Iterable[tuple[int, dict[str, Any]]]) -> None:
        with self._lock:
            self.responses.extend(responses)

    def paths(self) -> list[str]:
        with self._lock:
            return [request.path for request in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
