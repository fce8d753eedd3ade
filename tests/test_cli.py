"""The operator command line, run as a process against the test database and Redis."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import update

from listener.models import actions
from tests.conftest import TOKENS, base_config, load_fixture, rows

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(listener, tmp_path):
    config_path = tmp_path / "listener.yaml"
    config_path.write_text(yaml.safe_dump(base_config()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTENER_", "DATABASE_", "REDIS_"))}
    env |= {"DATABASE_URL": listener.runtime.settings.database_url, "REDIS_URL": listener.runtime.settings.redis_url,
            "LISTENER_CONFIG": str(config_path), "LISTENER_QUEUE": listener.runtime.settings.queue_name}

    def run(*args: str, expect: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "listener", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == expect, done.stderr + done.stdout
        return done.stdout

    return run


def ready_asset(listener) -> None:
    listener.post("/create", load_fixture("iconik", "create__asset"))
    proxy = load_fixture("iconik", "proxy__closed")
    proxy["object_id"] = "2b45a8ca-f0b4-11e7-a36b-0a580a00054a"
    listener.post("/proxy", proxy)


def test_items_actions_and_events_tables(cli, listener):
    ready_asset(listener)
    listener.post("/scoopa", load_fixture("scoopa", "validation__probe"))
    items = cli("items")
    assert items.splitlines()[0].split() == ["ID", "SOURCE", "KEY", "STATE", "UPDATED_AT"]
    assert "2b45a8ca-f0b4-11e7-a36b-0a580a00054a  ready" in items
    assert "analyze" in cli("actions", "--kind", "analyze")
    assert cli("actions", "--kind", "download").splitlines()[1:] == []
    events = cli("events", "--status", "ignored")
    assert "endpoint validation test" in events and "/create" not in events


def test_json_output_is_the_admin_api_page(cli, listener):
    ready_asset(listener)
    page = json.loads(cli("items", "--json", "--source", "iconik"))
    assert [item["state"] for item in page["items"]] == ["ready"]
    assert page["next"] is None


def test_retry_puts_a_failed_action_back_and_refuses_a_done_one(cli, listener):
    ready_asset(listener)
    [action] = rows(listener.runtime, "actions")
    with listener.runtime.engine.begin() as conn:
        conn.execute(update(actions).where(actions.c.id == action["id"]).values(status="failed", error="boom"))
    answer = json.loads(cli("retry", str(action["id"])))
    assert answer["status"] == "queued"
    assert rows(listener.runtime, "actions")[0]["status"] == "queued"
    with listener.runtime.engine.begin() as conn:
        conn.execute(update(actions).where(actions.c.id == action["id"]).values(status="done"))
    refused = json.loads(cli("retry", str(action["id"]), expect=1))
    assert "done" in refused["message"]


def test_replay_records_a_new_event(cli, listener):
    listener.post("/scoopa", load_fixture("scoopa", "new_file__video"))
    [event] = rows(listener.runtime, "events")
    cli("replay", str(event["id"]))
    assert len(rows(listener.runtime, "events")) == 2


def test_send_fixture_posts_a_sample_to_a_running_listener(cli, listener):
    out = cli("send-fixture", "brightcove", "ingest__sequence", "--url", listener.url)
    assert out.count("200 ") == 17
    assert rows(listener.runtime, "items")[0]["state"] == "published"
    assert '"accepted"' in cli("send-fixture", "screen9", "upload__success", "--url", listener.url)
    assert '"accepted"' in cli("send-fixture", "iconik", "proxy__closed", "--url", listener.url)
    assert {e["endpoint"] for e in rows(listener.runtime, "events")} == {"/dynamic-ingest", "/screen9", "/proxy"}


def test_send_fixture_names_the_samples_when_one_is_unknown(cli):
    done = subprocess.run([sys.executable, "-m", "listener", "send-fixture", "scoopa", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "new_file__video" in done.stderr and "validation__probe" in done.stderr


def test_watch_shows_progress_bars(cli, listener):
    ready_asset(listener)
    [action] = rows(listener.runtime, "actions")
    with listener.runtime.engine.begin() as conn:
        conn.execute(update(actions).where(actions.c.id == action["id"]).values(
            status="running", attempts=2, bytes_done=512 * 1024, bytes_total=1024 * 1024, speed_bps=2 * 1024 ** 2))
    screen = cli("watch", "--once")
    assert "running 1" in screen
    assert "[" + "#" * 10 in screen and "50% of 1.0 MiB" in screen and "2.0 MiB/s" in screen and "try 2" in screen


def test_secrets_are_not_printed(cli, listener):
    ready_asset(listener)
    out = cli("items", "--json") + cli("actions", "--json") + cli("events", "--json")
    for secret in (*TOKENS.values(), "iconik-auth-secret"):
        assert secret not in out
