"""Reading a webhook body into a JSON object, with a message naming every way it can be wrong."""
from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class BadBody(Exception):
    """Answered 400."""


class TooLarge(Exception):
    """Answered 413."""


def read_limited(stream: Any, limit: int) -> bytes:
    """Read a whole body, refusing one longer than ``limit`` bytes (chunked bodies included)."""
    parts, size = [], 0
    while True:
        part = stream.read(min(65536, limit + 1 - size))
        if not part:
            return b"".join(parts)
        parts.append(part)
        size += len(part)
        if size > limit:
            raise TooLarge(f"body: larger than the limit of {limit} bytes")


def _no_constants(name: str) -> Any:
    raise BadBody(f"body: {name} is not valid JSON")


# One decoder for every body: json.loads with an argument builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def parse_json_object(raw: bytes) -> tuple[dict[str, Any], str]:
    """The body as a JSON object, and its text (stored as it came, to save serialising it again)."""
    if not raw.strip():
        raise BadBody("body: empty, expected a JSON object")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadBody(f"body: not valid UTF-8 (byte {error.start})") from None
    if "\\u0000" in text:
        # PostgreSQL cannot store NUL in text; no platform sends it.
        raise BadBody("body: contains a NUL character (\\u0000)")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise BadBody(f"body: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise BadBody("body: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise BadBody(f"body: expected a JSON object, got {_json_type(value)}")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadBody("body: contains an unpaired UTF-16 surrogate escape") from None
    return value, text


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def clean_fields(fields: dict[str, str]) -> dict[str, str]:
    """Query and form fields as handler payload: the token removed, NUL refused."""
    payload = {}
    for name, value in fields.items():
        if name == "token":
            continue
        if "\x00" in name or "\x00" in value:
            raise BadBody(f"{name or 'parameter'}: contains a NUL character")
        payload[name] = value
    return payload
