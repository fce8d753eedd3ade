"""Fetching a URL that came in a webhook, without letting the sender aim us at our own network (SPEC 4).

A download URL is chosen by whoever can call the webhook. Left unchecked it
could point at ``http://169.254.169.254/`` (a cloud's metadata service), at
``localhost``, or at anything else only this machine can reach. So, for the
URL and for every redirect hop, before connecting:

- the scheme must be ``http`` or ``https``;
- the host must match one of the source's ``allowed_hosts`` (glob patterns
  such as ``*.amazonaws.com``) when that list is set;
- every address the host resolves to must be public, unless the source has
  ``allow_private_hosts: true``.

The connection then goes to an address that was checked (the ``Host``
header, TLS SNI and certificate check still use the host name), so a DNS
answer that changes between the check and the connect (DNS rebinding) cannot
slip a private address in. Redirects are followed here, hop by hop, never by
the HTTP library.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error

from jobs.errors import ActionError, PermanentError

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
# The CA bundle requests uses (certifi), without importing requests here (a download-only worker
# stays smaller); a module attribute so a test can trust its own CA.
CA_BUNDLE = certifi.where()


class Refused(PermanentError):
    """The URL points somewhere the listener will not fetch from; retrying cannot change that."""


@dataclass(frozen=True)
class Policy:
    allowed_hosts: tuple[str, ...] = ()
    allow_private: bool = False


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]  # the checked addresses, tried in turn
    path: str  # path and query, as sent in the request line


def is_public(address: str) -> bool:
    """Whether an address is a public unicast one (not loopback, private, link-local, reserved, ...)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def redact(url: str) -> str:
    """A URL for messages: scheme, host and path, never the query (signed links carry credentials)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}" + ("?..." if parts.query else "")


def check(url: str, policy: Policy) -> Target:
    """Check one URL against the policy; return where to connect. Raises Refused or ActionError."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"refused {redact(url)}: only http and https URLs are fetched, not {scheme or 'no scheme'!r}")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise Refused(f"refused {url[:200]!r}: the URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise Refused(f"refused {url[:200]!r}: the port is not a number between 0 and 65535") from None
    if policy.allowed_hosts and not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in policy.allowed_hosts):
        raise Refused(f"refused {redact(url)}: host {host} is not in the source's allowed_hosts "
                      f"({', '.join(policy.allowed_hosts)})")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ActionError(f"cannot resolve {host}: {error}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise ActionError(f"cannot resolve {host}: no addresses")
    if not policy.allow_private:
        for address in addresses:
            if not is_public(address):
                raise Refused(
                    f"refused {redact(url)}: {host} resolves to {address}, a private, loopback, link-local or "
                    "reserved address; set allow_private_hosts: true on the source to allow it"
                )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url=url, scheme=scheme, host=host, port=port, addresses=tuple(addresses), path=path)


class Fetched:
    """A streaming response and the pool it came from; close() releases both."""

    def __init__(self, response: urllib3.BaseHTTPResponse, pool: urllib3.HTTPConnectionPool, url: str) -> None:
        self.response = response
        self.pool = pool
        self.url = url

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    def close(self) -> None:
        self.response.release_conn()
        self.response.close()
        self.pool.close()

    def __enter__(self) -> Fetched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch(url: str, policy: Policy, *, headers: Mapping[str, str] | None = None,
          timeout: tuple[float, float] = (10.0, 60.0)) -> Fetched:
    """GET ``url`` as a stream, checking it and each redirect hop against ``policy``."""
    for _hop in range(MAX_REDIRECTS + 1):
        target = check(url, policy)
        fetched = _get(target, headers or {}, timeout)
        location = fetched.headers.get("Location")
        if fetched.status not in REDIRECTS or not location:
            return fetched
        fetched.close()
        url = urljoin(url, location)
    raise PermanentError(f"more than {MAX_REDIRECTS} redirects, the last to {redact(url)}")


def _get(target: Target, headers: Mapping[str, str], timeout: tuple[float, float]) -> Fetched:
    """GET from the first of the checked addresses that takes the connection."""
    error: Exception | None = None
    for address in target.addresses:
        try:
            return _get_from(address, target, headers, timeout)
        except (NewConnectionError, ConnectTimeoutError) as failed:  # not reachable there: the next address
            error = failed
    raise ActionError(f"cannot connect to {target.host}:{target.port}: {error}") from None


def _get_from(address: str, target: Target, headers: Mapping[str, str], timeout: tuple[float, float]) -> Fetched:
    default_port = 443 if target.scheme == "https" else 80
    host_header = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != default_port:
        host_header += f":{target.port}"
    pool_options = dict(timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]), retries=False, maxsize=1)
    if target.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address, target.port, cert_reqs="CERT_REQUIRED", ca_certs=CA_BUNDLE,
            server_hostname=target.host, assert_hostname=target.host, **pool_options)
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, **pool_options)
    request_headers = {"Host": host_header, "User-Agent": "listener", "Accept-Encoding": "identity", **headers}
    try:
        response = pool.urlopen("GET", target.path, headers=request_headers, redirect=False,
                                preload_content=False, assert_same_host=False)
    except (NewConnectionError, ConnectTimeoutError):
        pool.close()
        raise
    except (Urllib3Error, OSError) as error:
        pool.close()
        raise ActionError(f"cannot fetch {redact(target.url)}: {type(error).__name__}: {error}") from None
    return Fetched(response, pool, target.url)
