"""One ``requests`` session per thread of a worker, so calls to the same host reuse their connection.

``requests.post`` builds a session and opens a new TCP connection every time;
for an analysis, which is one short POST to the same iconik host as the last
one, that was a fifth of the job. A pooled connection that the server has
since closed is noticed by urllib3 and replaced before it is used.
"""
from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

import requests

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

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # noqa: ANN001, ANN201 - requests'
        if proxies or stream is not None or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        host = (parts.scheme, parts.netloc)
        if host not in self._settings_by_host:
            self._settings_by_host[host] = super().merge_environment_settings(url, {}, None, None, None)
        settings = self._settings_by_host[host]
        return {**settings, "proxies": dict(settings["proxies"])}  # the caller's to change


def session() -> requests.Session:
    if getattr(_local, "pid", None) != os.getpid():  # not a forked parent's sockets
        _local.session = _Session()
        _local.pid = os.getpid()
    return _local.session
