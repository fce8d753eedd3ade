"""The status page in a real headless Chromium, against the Procfile's web process (gunicorn).

A person logs in with the admin token, sees the call log, the items and the transfers, watches a transfer's
progress bar move as its action row changes, sees the transfer fail with its message, and retries it with
the button. The action rows are written by this test, as a job would write them. No worker runs, so a
retried action stays ``queued`` for the test to see. The screenshot for README is taken on the way:
set ``LISTENER_WRITE_SCREENSHOT=1`` to write it to docs/status-page.png; otherwise it goes to the test's
temporary directory.

Without Chromium the test is skipped, except in CI (``CI`` set), where it fails: there,
``.ci/browser-setup`` installs Debian's ``chromium`` first.
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import insert, select, update

from listener.db import get_engine
from listener.models import actions, items
from tests.conftest import TOKENS, base_config, load_fixture
from tests.support.browser import Browser, find_chromium
from tests.support.processes import ROOT, ListenerProcesses

ADMIN = "admin-status-page-token"
SCREENSHOT = ROOT / "docs" / "status-page.png"
HOSTILE = '<img src=x onerror="window.__pwned = 1">'
MB = 1_000_000


@pytest.fixture
def chromium() -> str:
    found = find_chromium()
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("Chromium is required in CI for the status page test: .ci/browser-setup installs it")
    pytest.skip("Chromium is not installed (apt-get install chromium, or run .ci/browser-setup); "
                "the status page's browser test needs it")


@pytest.fixture
def web(tmp_path, database_url, redis_url, clean):
    """The Procfile's web process alone, on the test database (migrated by the database_url fixture)."""
    (tmp_path / "listener").mkdir()
    processes = ListenerProcesses(tmp_path / "listener", database_url, redis_url, base_config(), ADMIN,
                                  mode="procfile")
    processes.start_web()
    try:
        processes.wait_ready()
        yield processes
    finally:
        processes.stop()


@pytest.fixture
def page(chromium, tmp_path):
    browser = Browser(chromium, tmp_path / "chromium-profile")
    try:
        yield browser.new_page()
    finally:
        browser.close()


def add_item(engine, key: str, file_name: str) -> int:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        return conn.execute(insert(items).values(source="scoopa", key=key, state="downloaded",
                                                 data={"file_name": file_name, "file_size_in_bytes": 50 * MB},
                                                 created_at=now, updated_at=now)).inserted_primary_key[0]


def add_action(engine, item_id: int, **values) -> int:
    now = datetime.now(UTC)
    row = dict(item_id=item_id, bytes_done=0, attempts=1, created_at=now, updated_at=now) | values
    with engine.begin() as conn:
        return conn.execute(insert(actions).values(**row)).inserted_primary_key[0]


def set_action(engine, action_id: int, **values) -> None:
    with engine.begin() as conn:
        conn.execute(update(actions).where(actions.c.id == action_id).values(updated_at=datetime.now(UTC), **values))


def action_status(engine, action_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(actions.c.status).where(actions.c.id == action_id)).scalar_one()


def cell(action_id: int, name: str) -> str:
    return f"document.querySelector('#actions-body tr[data-id=\"{action_id}\"] td.{name}')"


def test_status_page_live_progress_failure_and_retry(page, web, database_url, tmp_path):
    engine = get_engine(database_url)
    # The call log, through the real web process: a probe, a hostile caller, and a new file.
    for body in (load_fixture("scoopa", "validation__probe"),
                 load_fixture("scoopa", "validation__probe") | {"origin": HOSTILE},
                 load_fixture("scoopa", "new_file__video")):
        answer = requests.post(web.url + "/scoopa", json=body, headers={"X-Listener-Token": TOKENS["scoopa"]},
                               timeout=10)
        assert answer.status_code == 200, answer.text

    # The transfer log, as jobs write it: one done, one failed long ago, one about to start moving.
    news = add_item(engine, "mediapool:700", "evening-news.mxf")
    trailer = add_item(engine, "mediapool:701", "trailer.mov")
    started = datetime.now(UTC) - timedelta(minutes=3)
    add_action(engine, news, kind="download", target="evening-news.mxf", status="done", bytes_done=50 * MB,
               bytes_total=50 * MB, speed_bps=24.6 * MB, started_at=started, finished_at=started)
    old_failure = add_action(
        engine, trailer, kind="ftp_push", target="archive:/in", workflow="archive", status="failed", attempts=4,
        bytes_done=3_200_000, bytes_total=8 * MB, speed_bps=0.8 * MB, started_at=started, finished_at=started,
        error="ftp://archive:arch1ve-pw@ftp.archive.example:21: 550 /in/trailer.mov: Permission denied")
    pushing = add_action(engine, news, kind="ftp_push", target="playout:/incoming", workflow="playout",
                         status="running", bytes_total=50 * MB, started_at=datetime.now(UTC))

    # Not logged in: the login form. A person types the admin token and presses the button.
    start = page.mark()
    page.goto(web.url + "/status")
    page.wait_for("document.querySelector('#token') !== null")
    page.type("#token", ADMIN)
    page.click("#login")
    page.wait_for("document.body.dataset.polls >= 1")
    after_login = page.mark()

    # The call log, hostile text as text (the script rendered it, after the server did).
    reasons = page.evaluate("[...document.querySelectorAll('#events-body td.reason')].map(td => td.textContent)")
    assert "endpoint validation test" in reasons
    assert f"origin '{HOSTILE}' is not handled" in reasons
    assert page.evaluate("document.querySelectorAll('main img').length") == 0
    assert page.evaluate("window.__pwned") is None
    # Items with their state, and the file names of the transfers.
    keys = page.evaluate("[...document.querySelectorAll('#items-body td.key')].map(td => td.textContent)")
    assert {"mediapool:535986", "mediapool:700", "mediapool:701"} <= set(keys)
    assert page.evaluate(f"{cell(pushing, 'file')}.textContent") == "evening-news.mxf"
    assert page.evaluate(f"{cell(old_failure, 'error')}.textContent") == \
        "ftp://archive:…@ftp.archive.example:21: 550 /in/trailer.mov: Permission denied"  # its password masked
    html = page.evaluate("document.documentElement.outerHTML")
    assert "arch1ve-pw" not in html and ADMIN not in html
    assert page.evaluate(f"{cell(old_failure, 'do')}.querySelector('button').textContent") == "Retry"

    # The progress bar moves as the job writes its progress, without a reload.
    seen = []
    for done, speed in ((5 * MB, 9.7 * MB), (21 * MB, 11.2 * MB), (38 * MB, 10.4 * MB)):
        set_action(engine, pushing, bytes_done=done, speed_bps=speed)
        value = page.wait_for(f"(() => {{ const p = {cell(pushing, 'progress')}.querySelector('progress');"
                              f" return p.value === {done} ? p.position : 0; }})()")
        assert value == pytest.approx(done / (50 * MB))
        assert page.evaluate(f"{cell(pushing, 'speed')}.textContent") == f"{speed / MB:.1f} MB/s"
        seen.append(value)
        if done == 21 * MB:
            shot = page.screenshot(tmp_path / "status-page.png")
            if os.environ.get("LISTENER_WRITE_SCREENSHOT") == "1":
                shutil.copyfile(shot, SCREENSHOT)
    assert seen == sorted(seen) and len(set(seen)) == 3
    assert page.evaluate(f"{cell(pushing, 'progress')}.textContent").strip() == "38.0 MB of 50.0 MB (76 %)"

    # The transfer fails: its message and a retry button appear.
    message = "FTP server playout (ftp.playout.example:21): ConnectionResetError: [Errno 104] Connection reset by peer"
    set_action(engine, pushing, status="failed", attempts=3, error=message, finished_at=datetime.now(UTC))
    page.wait_for(f"{cell(pushing, 'error')}?.textContent === {json.dumps(message)}")
    assert page.evaluate(f"{cell(pushing, 'status')}.textContent") == "failed"

    # Retry from the page: the action is queued again, and the page says so.
    page.click(f'#actions-body tr[data-id="{pushing}"] button[data-retry]')
    web.wait_for(lambda: action_status(engine, pushing) == "queued", timeout=10)
    page.wait_for(f"{cell(pushing, 'status')}.textContent.startsWith('queued')")
    assert page.evaluate(f"{cell(pushing, 'do')}.querySelector('button')") is None
    assert page.evaluate("document.querySelector('#notice').textContent") == f"Action {pushing} is queued again."
    assert action_status(engine, old_failure) == "failed"  # only the one clicked

    # Nothing went wrong in the page, and nothing was fetched from anywhere but the listener.
    assert page.problems(after_login) == []
    assert [url for url in page.requested_urls(start) if not url.startswith(web.url + "/")] == []
    assert Path(tmp_path / "status-page.png").stat().st_size > 10_000
