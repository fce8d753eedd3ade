"""One ``requests`` session per thread of a worker, so calls to the same host reuse their connection.

``requests.post`` builds a session and opens a new TCP connection every time;
for an analysis, which is one short POST to the same iconik host as the last
one, that was a fifth of the job. A pooled connection that the server has
since closed is noticed by urllib3 and replaced before it is used.
"""
from __future__ import annotations

import os
import threading

import requests

_local = threading.local()


def session() -> requests.Session:
    if getattr(_local, "pid", None) != os.getpid():  # not a forked parent's sockets
        _local.session = requests.Session()
        _local.pid = os.getpid()
    return _local.session
