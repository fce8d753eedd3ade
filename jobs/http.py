"""One ``requests`` session per thread of a worker, so calls to the same host reuse their connection.

``requests.post`` builds a session and opens a new TCP connection every time;
for an analysis, which is one short POST to the same iconik host as the last
one, that was a fifth of the job. A pooled connection that the server has
since closed is noticed by urllib3 and replaced before it is used.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.utils import select_proxy
from urllib3.exceptions import HTTPError, ReadTimeoutError
from urllib3.util import Timeout

_local = threading.local()


class _Session(requests.Session):
    """A session that reads the environment's proxy and CA settings once per host, not once per call.

    requests looks them up for every request (``HTTPS_PROXY``, ``NO_PROXY``,
    ``REQUESTS_CA_BUNDLE``...): 115 µs a call here, against about 1 ms for the
    whole analysis request. A worker's environment does not change while it runs.
    """

    def __init__(self) -> None:
        super().__init__()
        self._settings_by_host: dict[tuple[str, str], dict[str, Any]] = {}
        self._routes: dict[tuple[str, str], tuple[Any, bool]] = {}

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # noqa: ANN001, ANN201 - requests'
        if proxies or stream is not None or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        host = (parts.scheme, parts.netloc)
        if host not in self._settings_by_host:
            self._settings_by_host[host] = super().merge_environment_settings(url, {}, None, None, None)
        settings = self._settings_by_host[host]
        return {**settings, "proxies": dict(settings["proxies"])}  # the caller's to change

    def post_without_body(self, url: str, headers: dict[str, str], timeout: float) -> Reply:
        """A POST with no body, on the connection pool requests would use, without requests' per-call work.

        ``Session.post`` cost 410 µs of CPU per analysis here, this 220: it builds
        no request and response objects, and merges no cookies, hooks or
        settings. The pool comes from requests' own adapter, so the proxy, the
        CA bundle and the client certificate are what ``post`` would use. No
        redirect is followed (a redirected POST is not the API's answer).
        Errors are requests' ``ConnectionError`` and ``ReadTimeout``.
        """
        parts = urlsplit(url)
        host = (parts.scheme, parts.netloc)
        target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
        # Kept per host: urllib3 2 does not close a pool its manager evicts, so a kept one stays usable.
        pool, absolute = self._routes.get(host) or self._route(url, host)
        try:
            response = pool.urlopen("POST", url if absolute else target, body=None,
                                    headers={**self.headers, **headers},  # requests' defaults (User-Agent...)
                                    redirect=False, assert_same_host=False, preload_content=True,
                                    retries=self.get_adapter(url).max_retries,
                                    timeout=Timeout(connect=timeout, read=timeout))
        except ReadTimeoutError as error:
            raise requests.ReadTimeout(error) from None
        except (HTTPError, OSError) as error:
            raise requests.ConnectionError(error) from None
        return Reply(response.status, response.reason or "", response.data)

    def _route(self, url: str, host: tuple[str, str]) -> tuple[Any, bool]:
        """requests' pool for ``url``'s host, and whether the request line takes the whole URL (a plain
        HTTP proxy) or the path."""
        settings = self.merge_environment_settings(url, {}, None, None, None)
        adapter = self.get_adapter(url)
        prepared = requests.PreparedRequest()
        prepared.prepare(method="POST", url=url)
        pool = adapter.get_connection_with_tls_context(prepared, settings["verify"], proxies=settings["proxies"],
                                                       cert=settings["cert"])
        adapter.cert_verify(pool, url, settings["verify"], settings["cert"])
        proxy = select_proxy(url, settings["proxies"])
        absolute = bool(proxy) and host[0] != "https" and not proxy.lower().startswith("socks")
        self._routes[host] = (pool, absolute)
        return pool, absolute


@dataclass(frozen=True)
class Reply:
    """An answer to ``post_without_body``: what a caller of requests' ``Response`` reads."""

    status_code: int
    reason: str
    content: bytes

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def session() -> _Session:
    if getattr(_local, "pid", None) != os.getpid():  # not a forked parent's sockets
        _local.session = _Session()
        _local.pid = os.getpid()
    return _local.session
