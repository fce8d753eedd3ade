"""The jobs' HTTP session: the environment's proxy and CA settings, read once per host; bodyless POSTs."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
import requests.sessions

from jobs.http import _Session

URLS = ("https://app.iconik.io/API/x", "https://internal.example/x", "http://app.iconik.io/x")


def test_it_takes_the_same_settings_from_the_environment_as_requests(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    ours, theirs = _Session(), requests.Session()
    for url in URLS:
        for _ in range(2):  # the second time from what it kept
            assert ours.merge_environment_settings(url, {}, None, None, None) == \
                theirs.merge_environment_settings(url, {}, None, None, None)
    assert ours.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"]["https"] == \
        "http://proxy.example:3128"
    assert ours.merge_environment_settings(URLS[1], {}, None, None, None)["proxies"] == {}


def test_the_environment_is_read_once_per_host(monkeypatch):
    reads = []
    real = requests.sessions.get_environ_proxies

    def counted(url: str, **options: object) -> dict[str, str]:
        reads.append(url)
        return real(url, **options)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    session = _Session()
    for _ in range(3):
        for url in URLS:
            session.merge_environment_settings(url, {}, None, None, None)
    assert reads == list(URLS)


def test_what_a_caller_changes_does_not_stay(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = _Session()
    session.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"]["https"] = "http://other:1"
    assert session.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"]["https"] == \
        "http://proxy.example:3128"


class RawServer:
    """Accepts connections and keeps each request's bytes; answers 201 with ``{}``, or nothing when ``mute``."""

    def __init__(self, mute: bool = False) -> None:
        self.requests: list[bytes] = []
        self.mute = mute
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                self.requests.append(connection.recv(65536))
                if self.mute:
                    time.sleep(1.0)
                    continue
                connection.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    def request_line_and_headers(self, index: int) -> tuple[str, set[str]]:
        line, *headers = self.requests[index].decode().split("\r\n\r\n")[0].split("\r\n")
        return line, set(headers)

    def close(self) -> None:
        self.socket.close()


HEADERS = {"App-ID": "app", "Auth-Token": "secret", "Accept": "application/json", "Content-Type": "application/json"}


def test_a_bodyless_post_sends_what_requests_post_sends():
    server = RawServer()
    url = f"http://127.0.0.1:{server.port}/API/transcode/v1/analyze/assets/a%2Fb/?x=1"
    theirs = requests.Session().post(url, headers=HEADERS, timeout=5)
    ours = _Session().post_without_body(url, HEADERS, 5)
    server.close()
    assert (ours.status_code, ours.ok, ours.json()) == (theirs.status_code, theirs.ok, theirs.json()) == (201, True, {})
    assert server.request_line_and_headers(1) == server.request_line_and_headers(0)
    assert server.request_line_and_headers(1)[0] == "POST /API/transcode/v1/analyze/assets/a%2Fb/?x=1 HTTP/1.1"


def test_a_bodyless_post_goes_through_the_proxy_of_the_environment_unless_no_proxy_says_otherwise(monkeypatch):
    proxy, direct = RawServer(), RawServer()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "localhost")
    session = _Session()
    session.post_without_body("http://api.example/API/x/?y=2", HEADERS, 5)
    session.post_without_body(f"http://localhost:{direct.port}/API/x/", HEADERS, 5)
    proxy.close()
    direct.close()
    assert proxy.request_line_and_headers(0)[0] == "POST http://api.example/API/x/?y=2 HTTP/1.1"
    assert direct.request_line_and_headers(0)[0] == "POST /API/x/ HTTP/1.1"


def test_a_bodyless_post_fails_with_requests_errors():
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(requests.ConnectionError):
        _Session().post_without_body(f"http://127.0.0.1:{port}/x", HEADERS, 2)
    mute = RawServer(mute=True)
    with pytest.raises(requests.ReadTimeout):
        _Session().post_without_body(f"http://127.0.0.1:{mute.port}/x", HEADERS, 0.3)
    mute.close()


def test_a_kept_pool_still_serves_after_requests_let_go_of_it():
    server = RawServer()
    url = f"http://127.0.0.1:{server.port}/x"
    session = _Session()
    session.post_without_body(url, HEADERS, 5)
    kept, _ = session._routes[("http", f"127.0.0.1:{server.port}")]
    session.get_adapter(url).poolmanager.clear()  # as when it evicts a pool, past ten hosts
    assert session.post_without_body(url, HEADERS, 5).status_code == 201
    assert session._routes[("http", f"127.0.0.1:{server.port}")][0] is kept
    server.close()
    assert len(server.requests) == 2
