"""The status page for people (SPEC 6): the call log, items and transfers, live.

``GET /status`` answers one server-rendered page; ``static/status.js`` then
polls the admin API every second and updates it in place (progress bars,
speed, attempts, errors), and its retry buttons call
``POST /api/actions/<id>/retry``. Everything is served by the app itself.

Who may see it: the holder of ``LISTENER_ADMIN_TOKEN`` (closed, 403, when it
is unset). A browser cannot send a Bearer header when it navigates, so the
token is given once to the login form, which sets a cookie:

- HttpOnly and SameSite=Strict, holding ``v1.<issued>.<HMAC>``, keyed by the
  admin token: webhook tokens never make one, changing the admin token ends
  every session, and it expires after ``SESSION_SECONDS``;
- accepted by the admin API too (``session_status`` below, used by
  ``listener.admin.require_admin``), where a state-changing request made with
  it must also carry ``X-Listener-Status: 1``. A cross-site form cannot send
  a custom header, and a cross-site script cannot without a CORS preflight
  that this app never grants.

``Authorization: Bearer <admin token>`` opens the page directly as well.
Nothing secret is ever put on the page: not the token, not the cookie, and
text that may carry credentials (targets, errors, reasons) is shown with
URL passwords, query values and tokens masked (``listener.redact``, applied by the admin API).
"""
from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, make_response, redirect, render_template, request, url_for
from sqlalchemy import select

from listener.models import actions, events, items
from listener.serialize import action_json, event_json, item_json

status_page = Blueprint("status_page", __name__, template_folder="templates", static_folder="static",
                        static_url_path="/status/static")

COOKIE = "listener_status"
CSRF_HEADER = "X-Listener-Status"
SESSION_SECONDS = 12 * 3600
ROWS = 50  # rows per table, as the page's script asks the API for
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
TRANSFER_KINDS = ("download", "ftp_push")  # the actions that move a file: shown with a progress bar
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


# --- sessions -------------------------------------------------------------------------------------------------


def _admin_token() -> str | None:
    return current_app.config.get("LISTENER_ADMIN_TOKEN") or None


def _mac(admin_token: str, message: str) -> str:
    key = b"listener status page session\0" + admin_token.encode("utf-8")
    return hmac.new(key, message.encode("ascii"), hashlib.sha256).hexdigest()


def make_session(admin_token: str, now: float | None = None) -> str:
    message = f"v1.{int(now if now is not None else time.time())}"
    return f"{message}.{_mac(admin_token, message)}"


def valid_session(admin_token: str, value: str | None, now: float | None = None) -> bool:
    if not value or len(value) > 200:
        return False
    version, _, rest = value.partition(".")
    issued, _, mac = rest.partition(".")
    if version != "v1" or not issued.isdigit():
        return False
    if not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(admin_token, f"v1.{issued}").encode("ascii")):
        return False
    age = (now if now is not None else time.time()) - int(issued)
    return -60 <= age <= SESSION_SECONDS


def session_status(admin_token: str) -> str | None:
    """For the admin API: ``"ok"`` when the request carries a valid status page session, ``"csrf"`` when
    it does but is a state-changing request without ``X-Listener-Status: 1``, None when it carries none."""
    if not valid_session(admin_token, request.cookies.get(COOKIE)):
        return None
    if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
        return "csrf"
    return "ok"


def _bearer_ok(admin_token: str) -> bool:
    authorization = request.headers.get("Authorization", "")
    presented = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    return bool(presented) and hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                                                   admin_token.encode("utf-8"))


def _secure() -> bool:
    """HTTPS here, or at the PaaS router in front (trusted as far as LISTENER_PROXY_HOPS says): a Secure cookie."""
    if request.is_secure:
        return True
    runtime = current_app.extensions.get("listener.runtime")
    hops = runtime.settings.proxy_hops if runtime is not None else 0
    return bool(hops) and request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip() == "https"


def _private(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _page(template: str, status: int = 200, **context: Any) -> Response:
    return _private(make_response(render_template(template, **context), status))


def _closed() -> Response:
    return _page("login.html", 403, closed=True, message=None)


# --- what is shown, and how -----------------------------------------------------------------------------------

def show_time(iso: str | None) -> str:
    if not iso:
        return ""
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")


def show_bytes(count: float | None) -> str:
    """Decimal units, one decimal place; the same strings as ``bytes`` in status.js."""
    if count is None:
        return ""
    value = float(count)
    if value < 1000:
        return f"{int(value)} B"
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def file_label(item: Any) -> str:
    if item is None:
        return ""
    data = item.data or {}
    return str(data.get("file_name") or data.get("name") or data.get("title") or item.key)


def transfer_view(action: dict[str, Any], label: str) -> dict[str, Any]:
    total = action["bytes_total"]
    done = action["bytes_done"] or 0
    percent = min(100, int(done * 100 / total)) if total else (100 if action["status"] == "done" else 0)
    return action | {
        "file": label,
        "percent": percent,
        "progress_text": (f"{show_bytes(done)} of {show_bytes(total)} ({percent} %)" if total
                          else (show_bytes(done) if done else "")),
        "has_bar": total is not None or action["kind"] in TRANSFER_KINDS,
        "speed": f"{show_bytes(action['speed_bps'])}/s" if action["speed_bps"] is not None else "",
        "time": show_time(action["started_at"]),
    }


def _snapshot() -> dict[str, list[dict[str, Any]]]:
    with current_app.extensions["listener.engine"].connect() as conn:
        event_rows = conn.execute(select(events).order_by(events.c.id.desc()).limit(ROWS)).all()
        item_rows = conn.execute(select(items).order_by(items.c.id.desc()).limit(ROWS)).all()
        action_rows = conn.execute(select(actions).order_by(actions.c.id.desc()).limit(ROWS)).all()
        known = {row.id: row for row in item_rows}
        missing = {row.item_id for row in action_rows} - set(known)
        if missing:
            known.update({row.id: row for row in conn.execute(select(items).where(items.c.id.in_(missing)))})
    return {
        "events": [event_json(row) for row in event_rows],
        "items": [item_json(row) | {"file": file_label(row)} for row in item_rows],
        "actions": [transfer_view(action_json(row), file_label(known.get(row.item_id))) for row in action_rows],
    }


# --- routes ---------------------------------------------------------------------------------------------------


@status_page.app_template_filter("when")
def _when_filter(iso: str | None) -> str:
    return show_time(iso)


@status_page.get("/status")
def page():  # noqa: ANN201
    admin_token = _admin_token()
    if not admin_token:
        return _closed()
    if not (valid_session(admin_token, request.cookies.get(COOKIE)) or _bearer_ok(admin_token)):
        return _page("login.html", 401, closed=False, message=None)
    return _page("status.html", rows=ROWS, csrf_header=CSRF_HEADER, **_snapshot())


@status_page.get("/status/login")
def login_form():  # noqa: ANN201
    admin_token = _admin_token()
    if not admin_token:
        return _closed()
    return _page("login.html", closed=False, message=None)


@status_page.post("/status/login")
def login():  # noqa: ANN201
    admin_token = _admin_token()
    if not admin_token:
        return _closed()
    presented = request.form.get("token", "").strip()
    if not presented or not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                                                admin_token.encode("utf-8")):
        return _page("login.html", 401, closed=False, message="That is not the admin token.")
    response = redirect(url_for("status_page.page"), 303)
    response.set_cookie(COOKIE, make_session(admin_token), max_age=SESSION_SECONDS, path="/", httponly=True,
                        samesite="Strict", secure=_secure())
    return _private(response)


@status_page.post("/status/logout")
def logout():  # noqa: ANN201
    response = redirect(url_for("status_page.login_form"), 303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=_secure())
    return _private(response)
