"""Masking secrets in text the listener shows: errors, targets, reasons, item data.

Applied where the admin API serialises (so the status page, the command line
and API clients all see the same masked text), not in each place that shows it.
"""
from __future__ import annotations

import re
from typing import Any

_SECRET_PATTERNS = (
    (re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1 …"),
    (re.compile(r"\b([a-z][a-z0-9+.-]*://[^/@\s:]*):[^/@\s]*@", re.IGNORECASE), r"\1:…@"),
    (re.compile(r"([?&][^=&\s#]+)=[^&\s#]+"), r"\1=…"),
    (re.compile(r"\b(token|password|passwd|secret|api[_-]?key|auth[_-]?token|authorization)(\s*[=:]\s*)"
                r"(?!…|bearer\b|basic\b)[^\s,;&]+", re.IGNORECASE), r"\1\2…"),
)


def redact(text: Any) -> str:
    """Text with URL passwords, query values (signed links among them) and tokens masked."""
    value = "" if text is None else str(text)
    for pattern, replacement in _SECRET_PATTERNS:
        value = pattern.sub(replacement, value)
    return value


def redact_nullable(text: str | None) -> str | None:
    return None if text is None else redact(text)


def redact_data(value: Any) -> Any:
    """Every string inside a JSON value, masked (an item's data holds download links)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_data(element) for element in value]
    if isinstance(value, dict):
        return {key: redact_data(element) for key, element in value.items()}
    return value
