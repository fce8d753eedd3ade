"""The status page without a browser: who may see it, what it never shows, and hostile text shown as text.

The page itself, live in a real browser, is tested in tests/e2e/test_status_page.py.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import insert, select

from listener import status_page
from listener.models import actions, items
from listener.redact import redact
from tests.conftest import ADMIN_TOKEN, TOKENS, base_config, load_fixture, rows

STATIC = Path(status_page.__file__).parent


def login(live, token: str = ADMIN_TOKEN) -> requests.Response:
    return live.http.post(live.url + "/status/login", data={"token": token}, allow_redirects=False, timeout=10)


def add_action(runtime, **values) -> int:
    """An item and one action on it, written straight to the database."""
    now = datetime.now(UTC)
    with runtime.engine.begin() as conn:
        item_id = conn.execute(insert(items).values(
            source="scoopa", key=values.pop("key", "mediapool:1"), state="received",
            data=values.pop("data", {"file_name": "clip.mov"}), created_at=now, updated_at=now)).inserted_primary_key[0]
        row = dict(item_id=item_id, kind="download", target="clip.mov", status="failed", attempts=3, bytes_done=0,
                   created_at=now, updated_at=now)
        row.update(values)
        return conn.execute(insert(actions).values(**row)).inserted_primary_key[0]


# --- who may see it ---------------------------------------------------------------------------------------------


def test_closed_when_the_admin_token_is_unset(start_listener):
    live = start_listener(admin_token=None)
    for method, path in (("GET", "/status"), ("GET", "/status/login"), ("POST", "/status/login")):
        answer = live.http.request(method, live.url + path, data={"token": ""}, allow_redirects=False, timeout=10)
        assert answer.status_code == 403, (method, path)
        assert "LISTENER_ADMIN_TOKEN" in answer.text
        assert "Set-Cookie" not in answer.headers
    assert live.get("/api/events").status_code == 403


def test_without_a_session_the_page_is_the_login_form(listener):
    answer = listener.get("/status")
    assert answer.status_code == 401
    assert 'name="token"' in answer.text
    assert "actions-body" not in answer.text


@pytest.mark.parametrize("token", ["wrong", TOKENS["scoopa"], "", ADMIN_TOKEN + "x"])
def test_a_wrong_token_or_a_webhook_token_does_not_log_in(listener, token):
    answer = login(listener, token)
    assert answer.status_code == 401
    assert "Set-Cookie" not in answer.headers
    assert "not the admin token" in answer.text
    if token:
        assert token not in answer.text  # never echoed back
    assert listener.get("/status").status_code == 401


def test_login_sets_a_strict_httponly_session_that_opens_the_page_and_the_api(listener):
    answer = login(listener)
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith("/status")
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{status_page.COOKIE}=v1.")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="):
        assert attribute in cookie
    page = listener.get("/status")
    assert page.status_code == 200
    assert 'id="actions-body"' in page.text
    assert listener.get("/api/events").status_code == 200  # the page's script reads the API with the cookie
    assert listener.get("/api/actions?status=failed").status_code == 200

    logout = listener.http.post(listener.url + "/status/logout", allow_redirects=False, timeout=10)
    assert logout.status_code == 303
    assert listener.get("/status").status_code == 401
    assert listener.get("/api/events").status_code == 401


def test_the_cookie_is_secure_behind_an_https_router(start_listener):
    plain = start_listener()
    assert "Secure" not in login(plain).headers["Set-Cookie"]  # plain HTTP: a Secure cookie would not come back
    routed = start_listener(proxy_hops=1)
    answer = routed.http.post(routed.url + "/status/login", data={"token": ADMIN_TOKEN}, allow_redirects=False,
                              headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert "; Secure" in answer.headers["Set-Cookie"]
    # Without a router in front (LISTENER_PROXY_HOPS=0) the header is the caller's word, and not taken.
    spoofed = plain.http.post(plain.url + "/status/login", data={"token": ADMIN_TOKEN}, allow_redirects=False,
                              headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert "Secure" not in spoofed.headers["Set-Cookie"]


def test_a_bearer_header_opens_the_page_directly(listener):
    answer = listener.admin("/status")
    assert answer.status_code == 200
    assert 'id="transfers"' in answer.text
    wrong = listener.get("/status", headers={"Authorization": f"Bearer {TOKENS['iconik']}"})
    assert wrong.status_code == 401


def test_a_session_is_bound_to_the_admin_token_and_expires(listener):
    now = 1_700_000_000
    value = status_page.make_session(ADMIN_TOKEN, now)
    assert status_page.valid_session(ADMIN_TOKEN, value, now + 60)
    assert not status_page.valid_session("another-admin-token", value, now + 60)  # the token changed
    assert not status_page.valid_session(ADMIN_TOKEN, value, now + status_page.SESSION_SECONDS + 1)
    assert not status_page.valid_session(ADMIN_TOKEN, status_page.make_session(ADMIN_TOKEN, now + 3600), now)
    issued = value.split(".")[1]
    assert not status_page.valid_session(ADMIN_TOKEN, value.replace(issued, str(int(issued) + 1)), now + 60)
    assert not status_page.valid_session(ADMIN_TOKEN, value[:-1] + ("0" if value[-1] != "0" else "1"), now + 60)
    for junk in ("", "v1", "v1..", "v2.1.abc", "v1.x.abc", "é" * 10):
        assert not status_page.valid_session(ADMIN_TOKEN, junk, now)

    # Over HTTP: a session made with another admin token (or forged with a webhook token) opens nothing.
    for forged in (status_page.make_session("another-admin-token"), status_page.make_session(TOKENS["scoopa"])):
        cookies = {status_page.COOKIE: forged}
        assert listener.get("/status", cookies=cookies).status_code == 401
        assert listener.get("/api/events", cookies=cookies).status_code == 401


def test_posts_made_with_the_session_need_the_status_page_header(listener):
    action_id = add_action(listener.runtime, error="connection refused")
    assert login(listener).status_code == 303
    refused = listener.http.post(f"{listener.url}/api/actions/{action_id}/retry", timeout=10)
    assert refused.status_code == 403
    assert "X-Listener-Status" in refused.json()["message"]
    assert rows(listener.runtime, "actions")[0]["status"] == "failed"

    retried = listener.http.post(f"{listener.url}/api/actions/{action_id}/retry",
                                 headers={"X-Listener-Status": "1"}, timeout=10)
    assert retried.status_code == 200, retried.text
    assert rows(listener.runtime, "actions")[0]["status"] == "queued"
    again = listener.http.post(f"{listener.url}/api/actions/{action_id}/retry",
                               headers={"X-Listener-Status": "1"}, timeout=10)
    assert again.status_code == 409


def test_the_page_is_private_and_framed_by_nobody(listener):
    for answer in (listener.get("/status"), listener.admin("/status")):
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Frame-Options"] == "DENY"
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp


def test_every_asset_is_served_by_the_listener_itself(listener):
    page = listener.admin("/status").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(assets) == ["/status/static/status.css", "/status/static/status.js"]
    for path in assets:
        answer = listener.get(path)
        assert answer.status_code == 200, path
    assert "javascript" in listener.get("/status/static/status.js").headers["Content-Type"]
    for path in [*STATIC.joinpath("templates").iterdir(), *STATIC.joinpath("static").iterdir()]:
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import", path.read_text()), path


# --- what it shows ----------------------------------------------------------------------------------------------


def test_it_shows_the_call_log_items_and_transfers(listener):
    listener.post("/scoopa", load_fixture("scoopa", "validation__probe"))
    listener.post("/scoopa", load_fixture("scoopa", "new_file__video"))
    add_action(listener.runtime, key="mediapool:2", data={"file_name": "big.mxf"}, kind="ftp_push",
               target="playout:/incoming", status="running", attempts=1, bytes_done=250_000_000,
               bytes_total=1_000_000_000, speed_bps=12_500_000.0, started_at=datetime(2024, 5, 1, 12, 0, 3, tzinfo=UTC))
    page = listener.admin("/status").text
    assert "endpoint validation test" in page  # the probe, in the call log
    assert "mediapool:535986" in page and "server_push.svg" in page  # the item
    row = re.search(r'<tr data-id="\d+" class="status-running">.*?</tr>', page, re.S).group(0)
    for shown in ("2024-05-01 12:00:03", "ftp_push", "big.mxf", "playout:/incoming", "250.0 MB of 1.0 GB (25 %)",
                  "12.5 MB/s", '<progress max="1000000000" value="250000000">'):
        assert shown in row, shown
    assert "Retry" not in row


def test_a_failed_transfer_shows_its_error_and_a_retry_button(listener):
    action_id = add_action(listener.runtime, error="FTP server playout (ftp.example.test:21): 550 Permission denied",
                           bytes_done=4096, bytes_total=8192)
    page = listener.admin("/status").text
    row = re.search(rf'<tr data-id="{action_id}" class="status-failed">.*?</tr>', page, re.S).group(0)
    assert "550 Permission denied" in row
    assert f'data-retry="{action_id}"' in row
    assert "4.1 kB of 8.2 kB (50 %)" in row


def test_hostile_text_is_shown_as_text(start_listener):
    live = start_listener(base_config(sources={"scoopa": {"token": TOKENS["scoopa"], "download": True}}))
    probe = load_fixture("scoopa", "validation__probe") | {"origin": "<script>alert('reason')</script>"}
    assert live.post("/scoopa", probe).json()["status"] == "ignored"
    hostile = load_fixture("scoopa", "new_file__video") | {"file_name": '<img src=x onerror="alert(1)">.mov'}
    assert live.post("/scoopa", hostile).json()["status"] == "accepted"
    [download] = rows(live.runtime, "actions")
    assert download["target"] == hostile["file_name"]

    page = live.admin("/status").text
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#39;reason&#39;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;.mov" in page
    assert page.count("<script") == 1  # status.js, and nothing else


def test_no_secret_ever_appears_on_the_page(start_listener):
    secrets = {
        "admin": ADMIN_TOKEN, **TOKENS, "iconik auth": "iconik-auth-secret", "ftp": "ftp-pass-secret",
        "notify url": "notify-url-secret", "notify header": "notify-header-secret", "signed link": "sig-secret",
        "error url": "url-pass-secret", "error header": "hdr-secret", "error field": "field-secret",
    }
    config = base_config(
        ftp_servers={"playout": {"host": "ftp.example.test", "username": "bob", "password": secrets["ftp"]}},
        workflows=[{"name": "tell", "source": "scoopa", "action": "notify", "on": ["received"],
                    "url": f"https://hooks.example.test/notify?token={secrets['notify url']}&x=1",
                    "headers": {"Authorization": f"Bearer {secrets['notify header']}"}}],
    )
    live = start_listener(config)
    signed = load_fixture("scoopa", "new_file__video") | {
        "download_url": f"https://media.example.test/535986.mov?X-Amz-Signature={secrets['signed link']}"}
    assert live.post("/scoopa", signed).json()["status"] == "accepted"
    add_action(live.runtime, kind="ftp_push", target="playout:/in", error=(
        f"cannot connect to ftp://bob:{secrets['error url']}@ftp.example.test/in; "
        f"sent Authorization: Bearer {secrets['error header']}, password={secrets['error field']}"))
    with live.runtime.engine.connect() as conn:
        assert conn.execute(select(actions.c.target).where(actions.c.kind == "notify")).scalar().endswith("&x=1")

    assert login(live).status_code == 303
    session = live.http.cookies.get(status_page.COOKIE)
    page = live.get("/status").text
    assert "hooks.example.test/notify?token=…&amp;x=…" in page  # the target, its query masked
    assert "ftp://bob:…@ftp.example.test/in" in page and "Bearer …" in page and "password=…" in page
    for name, secret in secrets.items():
        assert secret not in page, name
    assert session not in page
    assert live.get("/status/login").text.count(ADMIN_TOKEN) == 0


@pytest.mark.parametrize(("text", "shown"), [
    ("GET https://h.test/f.mov?sig=abc&exp=1 failed", "GET https://h.test/f.mov?sig=…&exp=… failed"),
    ("ftp://user:pa55@ftp.test:21/in", "ftp://user:…@ftp.test:21/in"),
    ("Authorization: Bearer abc.def", "Authorization: Bearer …"),
    ("token=abc; api_key: xyz, secret=s", "token=…; api_key: …, secret=…"),
    ("550 /in/clip.mov: Permission denied", "550 /in/clip.mov: Permission denied"),
    (None, ""),
])
def test_redact(text, shown):
    assert redact(text) == shown
