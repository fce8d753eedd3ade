"""The operator commands of ``python -m listener``: tables of items, actions and events,
retry, replay, send-fixture and watch.

They go through the admin API, so filters, shapes and rules (a done action is
never retried) are the same as over HTTP: in this process against DATABASE_URL
and REDIS_URL by default, or against a running listener with ``--url``.
"""
from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

import requests

from config import ListenerConfig, Settings

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

COLUMNS = {
    "items": ["id", "source", "key", "state", "updated_at"],
    "actions": ["id", "kind", "item_id", "status", "attempts", "progress", "speed", "target", "error"],
    "events": ["id", "received_at", "source", "endpoint", "status", "reason", "item_id"],
}


class AdminClient:
    """Calls the admin API in this process (Flask's test client) or over HTTP."""

    def __init__(self, settings: Settings, config: ListenerConfig, url: str | None = None) -> None:
        self.url = url.rstrip("/") if url else None
        if self.url:
            self.token = settings.admin_token or ""
            self.http = requests.Session()
        else:
            from listener.app import create_app
            from listener.runtime import Runtime

            # A token of our own: this process is the admin, whatever the environment says.
            self.token = secrets.token_urlsafe(24)
            runtime = Runtime(settings=replace(settings, admin_token=self.token), config=config)
            self.app = create_app(runtime).test_client()

    def call(self, method: str, path: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.url:
            answer = self.http.request(method, self.url + path, headers=headers, timeout=30)
            return answer.status_code, answer.json()
        answer = self.app.open(path, method=method, headers=headers)
        return answer.status_code, answer.get_json()


def list_command(client: AdminClient, what: str, filters: dict[str, Any], as_json: bool, out: TextIO) -> int:
    query = urlencode({k: v for k, v in filters.items() if v not in (None, "")})
    status, page = client.call("GET", f"/api/{what}" + (f"?{query}" if query else ""))
    if status != 200:
        print(page.get("message", page), file=sys.stderr)
        return 1
    if as_json:
        json.dump(page, out, indent=2)
        out.write("\n")
        return 0
    print_table([_cells(what, row) for row in page["items"]], COLUMNS[what], out)
    if page["next"]:
        print(f"(more: --before {page['next'].rsplit('before=', 1)[-1]})", file=out)
    return 0


def post_command(client: AdminClient, path: str, out: TextIO) -> int:
    status, answer = client.call("POST", path)
    json.dump(answer, out, indent=2)
    out.write("\n")
    return 0 if status == 200 else 1


def _cells(what: str, row: dict[str, Any]) -> dict[str, str]:
    cells = {name: "" if row.get(name) is None else str(row.get(name)) for name in COLUMNS[what]}
    if what == "actions":
        cells["progress"] = progress_text(row)
        cells["speed"] = human_bytes(row["speed_bps"]) + "/s" if row.get("speed_bps") else ""
        cells["error"] = (row.get("error") or "")[:60]
    return cells


def progress_text(action: dict[str, Any]) -> str:
    done, total = action.get("bytes_done") or 0, action.get("bytes_total")
    if total:
        return f"{100 * done / total:.0f}% of {human_bytes(total)}"
    return human_bytes(done) if done else ""


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def print_table(rows: list[dict[str, str]], columns: list[str], out: TextIO) -> None:
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip(), file=out)
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip(), file=out)


def send_fixture(settings: Settings, config: ListenerConfig, source: str, name: str, url: str | None,
                 out: TextIO) -> int:
    """Post a sample payload to a running listener, with the source's token, for trying hooks out."""
    from handlers import load_handler

    if source not in config.sources:
        print(f"no source named {source!r} in the config (sources: {', '.join(config.sources)})", file=sys.stderr)
        return 2
    path = FIXTURES / source / f"{name}.json"
    if not path.is_file():
        names = sorted(p.stem for p in (FIXTURES / source).glob("*.json"))
        print(f"no sample {name!r} for {source}; samples: {', '.join(names) or 'none'}", file=sys.stderr)
        return 2
    handler = load_handler(source, config.sources[source].handler)
    endpoint = _endpoint_for(handler.ENDPOINTS, name)
    base = (url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    token = config.sources[source].token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    payloads = json.loads(path.read_text())
    for payload in payloads if isinstance(payloads, list) else [payloads]:
        if handler.BODY == "query":
            answer = requests.get(base + endpoint, params=payload, headers=headers, timeout=10)
        else:
            answer = requests.post(base + endpoint, json=payload, headers=headers, timeout=10)
        print(f"{answer.status_code} {answer.text.strip()}", file=out)
    return 0


def _endpoint_for(endpoints: dict[str, Any], name: str) -> str:
    """The endpoint a sample belongs to: the one its name starts with (iconik's proxy__closed -> /proxy)."""
    for path in endpoints:
        if name.startswith(path.strip("/").split("-")[0]):
            return path
    return next(iter(endpoints))


def watch(client: AdminClient, out: TextIO, *, interval: float = 1.0, rounds: int | None = None,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Live transfers with progress bars; Ctrl-C stops."""
    shown = 0
    try:
        while rounds is None or shown < rounds:
            status, running = client.call("GET", "/api/actions?status=running&limit=20")
            _, queued = client.call("GET", "/api/actions?status=queued&limit=10")
            _, failed = client.call("GET", "/api/actions?status=failed&limit=5")
            if status != 200:
                print(running.get("message"), file=sys.stderr)
                return 1
            if out.isatty():
                out.write("\x1b[2J\x1b[H")
            out.write(render_watch(running["items"], queued["items"], failed["items"]))
            out.flush()
            shown += 1
            if rounds is None or shown < rounds:
                sleep(interval)
    except KeyboardInterrupt:
        pass
    return 0


def render_watch(running: list[dict], queued: list[dict], failed: list[dict]) -> str:
    width = max(20, min(40, shutil.get_terminal_size((100, 20)).columns - 60))
    lines = [f"running {len(running)}  queued {len(queued)}  failed (latest) {len(failed)}"]
    for action in running:
        done, total = action.get("bytes_done") or 0, action.get("bytes_total") or 0
        filled = int(width * done / total) if total else 0
        bar = "#" * filled + "-" * (width - filled)
        speed = human_bytes(action["speed_bps"]) + "/s" if action.get("speed_bps") else ""
        lines.append(f"{action['id']:>6} {action['kind']:<9} [{bar}] {progress_text(action):>18} {speed:>12}"
                     f"  try {action['attempts']}  {action['target'][:40]}")
    for action in queued:
        lines.append(f"{action['id']:>6} {action['kind']:<9} queued (attempts {action['attempts']})"
                     f"{'  last error: ' + action['error'][:50] if action.get('error') else ''}")
    for action in failed:
        lines.append(f"{action['id']:>6} {action['kind']:<9} FAILED after {action['attempts']}: "
                     f"{(action.get('error') or '')[:70]}")
    return "\n".join(lines) + "\n"
