"""Who may call: a per-source token, in constant time, and optional allowed networks (SPEC 2)."""
from __future__ import annotations

import hmac
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_address


class Unauthorized(Exception):
    """Answered 401; the message never contains the token that was sent."""


class Forbidden(Exception):
    """Answered 403."""


def presented_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token as a Bearer header, an X-Listener-Token header or a ``token`` query parameter."""
    authorization = headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return headers.get("X-Listener-Token") or query.get("token") or None


def check_token(expected: str | None, presented: str | None) -> None:
    if expected is None:  # an open source; the startup log says so
        return
    if presented is None:
        raise Unauthorized("missing token: send Authorization: Bearer <token>, X-Listener-Token or ?token=")
    if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        raise Unauthorized("wrong token")


def check_address(allowed: list[IPv4Network | IPv6Network], remote_addr: str | None) -> None:
    if not allowed:
        return
    try:
        address = ip_address(remote_addr or "")
    except ValueError:
        raise Forbidden("caller address unknown") from None
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    if not any(address in network for network in allowed):
        raise Forbidden(f"caller {address} is not in allow_ips")
