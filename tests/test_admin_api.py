"""The admin API's read side (SPEC 6): shapes, filters, paging, and who may read it."""
from __future__ import annotations

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import update

from listener.models import actions, items
from tests.conftest import TOKENS, load_fixture

EVENT_KEYS = {"id", "source", "endpoint", "received_at", "status", "reason", "item_id"}
ITEM_KEYS = {"id", "source", "key", "state", "data", "created_at", "updated_at"}
ACTION_KEYS = {"id", "kind", "item_id", "target", "status", "attempts", "bytes_done", "bytes_total", "speed_bps",
               "error", "started_at", "finished_at"}


def ingest_some(live) -> None:
    live.post("/create", load_fixture("iconik", "create__asset"))
    proxy = load_fixture("iconik", "proxy__closed")
    proxy["object_id"] = "2b45a8ca-f0b4-11e7-a36b-0a580a00054a"
    live.post("/proxy", proxy)
    live.post("/scoopa", load_fixture("scoopa", "validation__probe"))
    live.post("/scoopa", load_fixture("scoopa", "new_file__video"))
    live.get("/screen9", params=load_fixture("screen9", "upload__success") | {"token": TOKENS["screen9"]})


def test_events_list_shape_and_order(listener):
    ingest_some(listener)
    page = listener.admin("/api/events").json()
    assert page["next"] is None
    assert [e["endpoint"] for e in page["items"]] == ["/screen9", "/scoopa", "/scoopa", "/proxy", "/create"]
    for event in page["items"]:
        assert set(event) >= EVENT_KEYS
    probe = page["items"][2]
    assert (probe["status"], probe["reason"], probe["item_id"]) == ("ignored", "endpoint validation test", None)


def test_events_filters(listener):
    ingest_some(listener)
    assert len(listener.admin("/api/events?source=scoopa").json()["items"]) == 2
    ignored = listener.admin("/api/events?status=ignored").json()["items"]
    assert [e["source"] for e in ignored] == ["scoopa"]


def test_items_list_detail_and_filters(listener):
    ingest_some(listener)
    items = listener.admin("/api/items").json()["items"]
    assert [i["source"] for i in items] == ["screen9", "scoopa", "iconik"]
    for item in items:
        assert set(item) >= ITEM_KEYS
    [iconik] = listener.admin("/api/items?source=iconik&state=ready").json()["items"]
    assert listener.admin("/api/items?key=mediapool:535986").json()["items"][0]["source"] == "scoopa"
    detail = listener.admin(f"/api/items/{iconik['id']}").json()
    assert [e["endpoint"] for e in detail["events"]] == ["/proxy", "/create"]
    [action] = detail["actions"]
    assert set(action) >= ACTION_KEYS
    assert (action["kind"], action["status"], action["attempts"]) == ("analyze", "queued", 0)


def test_actions_list_filters(listener):
    ingest_some(listener)
    assert len(listener.admin("/api/actions?kind=analyze").json()["items"]) == 1
    assert listener.admin("/api/actions?kind=download").json()["items"] == []
    assert len(listener.admin("/api/actions?source=iconik&status=queued").json()["items"]) == 1
    assert listener.admin("/api/actions?source=scoopa").json()["items"] == []


def test_paging_walks_every_event_once(listener):
    for index in range(7):
        listener.get("/screen9", params={"mediaid": f"m{index}", "status": "success", "token": TOKENS["screen9"]})
    seen, path = [], "/api/events?limit=3&source=screen9"
    while path:
        page = listener.admin(path).json()
        seen += [event["id"] for event in page["items"]]
        path = page["next"]
        if path:
            assert "source=screen9" in path and "limit=3" in path
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 7


def test_unknown_item_is_404(listener):
    answer = listener.admin("/api/items/999999")
    assert answer.status_code == 404 and "999999" in answer.json()["message"]


@pytest.mark.parametrize("query", ["limit=abc", "before=-1", "item_id=x"])
def test_bad_paging_parameters_are_400(listener, query):
    path = "/api/actions" if "item_id" in query else "/api/events"
    answer = listener.admin(f"{path}?{query}")
    assert answer.status_code == 400
    assert query.split("=")[0] in answer.json()["message"]


@pytest.mark.parametrize("path", ["/api/events", "/api/items", "/api/items/1", "/api/actions"])
def test_admin_api_needs_the_admin_token(listener, path):
    assert listener.get(path).status_code == 401
    assert listener.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    for token in TOKENS.values():  # webhook tokens never open it
        assert listener.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert listener.get(path, params={"token": token}).status_code == 401


def test_admin_api_is_closed_without_admin_token_configured(start_listener):
    live = start_listener(admin_token=None)
    answer = live.get("/api/events", headers={"Authorization": "Bearer "})
    assert answer.status_code == 403
    assert "LISTENER_ADMIN_TOKEN" in answer.json()["message"]


def test_answers_never_contain_secrets(listener):
    ingest_some(listener)
    listener.post("/create?token=" + TOKENS["iconik"], load_fixture("iconik", "create__asset"), token=None)
    for path in ("/api/events", "/api/items", "/api/actions", "/api/items/1"):
        text = listener.admin(path).text
        for secret in (*TOKENS.values(), "iconik-auth-secret"):
            assert secret not in text


def test_healthz_and_readyz(listener):
    assert listener.get("/healthz").json() == {"status": "ok"}
    ready = listener.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_reports_redis_down(start_listener):
    live = start_listener(redis_url="redis://127.0.0.1:1/0")
    ready = live.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"].startswith("unavailable")


def test_credentials_in_errors_targets_and_data_are_masked(listener):
    from sqlalchemy import update

    from listener.models import actions, items

    ingest_some(listener)
    with listener.runtime.engine.begin() as conn:
        conn.execute(update(actions).values(status="failed", target="ftp://playout:hunter2@ftp.example.com/in",
                                            error="550 for ftp://playout:hunter2@ftp.example.com: token=abc123"))
        conn.execute(update(items).where(items.c.source == "scoopa").values(
            data={"download_url": "https://s3.example.com/f.mxf?X-Amz-Signature=deadbeef&X-Amz-Expires=86400"}))
    text = "".join(str(listener.admin(path).json()) for path in ("/api/actions", "/api/items", "/api/items/3"))
    for secret in ("hunter2", "abc123", "deadbeef"):
        assert secret not in text
    assert "ftp://playout:…@ftp.example.com" in text and "X-Amz-Signature=…" in text


def test_an_item_and_its_actions_are_read_in_one_snapshot(listener):
    """A job commits its item's facts, then its action's end: a read between the two reads neither."""
    ingest_some(listener)
    [item] = listener.admin("/api/items?source=iconik").json()["items"]
    engine = listener.runtime.engine
    between = []

    def commit_a_job_after_the_item_is_read(conn, statement, *_args) -> None:  # noqa: ANN001
        if between or "FROM items" not in str(statement) or "FROM actions" in str(statement):
            return
        between.append(str(statement))
        with engine.begin() as job:
            job.execute(update(items).where(items.c.id == item["id"]).values(data={"local_path": "/x"}))
            job.execute(update(actions).where(actions.c.item_id == item["id"]).values(status="done"))

    sa_event.listen(engine, "after_execute", commit_a_job_after_the_item_is_read)
    try:
        detail = listener.admin(f"/api/items/{item['id']}").json()
    finally:
        sa_event.remove(engine, "after_execute", commit_a_job_after_the_item_is_read)
    assert between
    assert "local_path" not in detail["data"]
    assert [action["status"] for action in detail["actions"]] == ["queued"]
    after = listener.admin(f"/api/items/{item['id']}").json()
    assert (after["data"], [action["status"] for action in after["actions"]]) == ({"local_path": "/x"}, ["done"])
