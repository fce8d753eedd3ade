"""POST /api/actions/<id>/retry and /api/events/<id>/replay: work again, never a done action twice."""
from __future__ import annotations

import copy

from rq import Queue
from sqlalchemy import update

from listener.models import actions
from tests.conftest import TOKENS, base_config, load_fixture, rows, run_jobs
from tests.jobs.conftest import settle

ASSET = "2b45a8ca-f0b4-11e7-a36b-0a580a00054a"


def iconik_config(api_url: str, **iconik: object) -> dict:
    config = base_config()
    config["sources"]["iconik"].update({"api_url": api_url} | iconik)
    return config


def make_ready(live) -> None:
    live.post("/create", load_fixture("iconik", "create__asset"))
    proxy = copy.deepcopy(load_fixture("iconik", "proxy__closed"))
    proxy["object_id"] = proxy["data"]["asset_id"] = ASSET
    live.post("/proxy", proxy)


def screen9_ready(live):
    params = load_fixture("screen9", "upload__success") | {"token": TOKENS["screen9"]}
    return live.get("/screen9", params=params).json()


def test_retry_puts_a_failed_action_back_and_it_runs_again(start_listener, recorder):
    iconik = recorder()
    iconik.queue([(403, {"errors": ["not yet allowed"]})])
    live = start_listener(iconik_config(iconik.url))
    make_ready(live)
    [action] = settle(live.runtime)
    assert (action["status"], action["attempts"]) == ("failed", 1)
    answer = live.admin(f"/api/actions/{action['id']}/retry", "POST")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "queued"
    assert (answer.json()["action"]["status"], answer.json()["action"]["attempts"]) == ("queued", 1)
    [action] = settle(live.runtime)
    assert (action["status"], action["attempts"], action["error"]) == ("done", 2, None)  # attempts kept, then +1
    assert len(iconik.requests) == 2


def test_retry_runs_an_action_waiting_for_its_next_attempt_now(start_listener, recorder, redis_url):
    iconik = recorder()
    iconik.queue([(500, {"errors": ["busy"]})])
    live = start_listener(iconik_config(iconik.url, retry=[3600]))
    make_ready(live)
    run_jobs(live.runtime)
    [action] = rows(live.runtime, "actions")
    assert (action["status"], action["attempts"]) == ("queued", 1) and action["not_before"] is not None
    scheduled = Queue("listener-test", connection=live.runtime.redis()).scheduled_job_registry
    assert scheduled.get_job_ids() == [f"action-{action['id']}-1"]
    answer = live.admin(f"/api/actions/{action['id']}/retry", "POST")
    assert answer.status_code == 200, answer.text
    assert scheduled.get_job_ids() == []  # the attempt an hour from now is off the schedule
    run_jobs(live.runtime)
    [action] = rows(live.runtime, "actions")
    assert (action["status"], action["attempts"]) == ("done", 2)
    assert len(iconik.requests) == 2


def test_retry_refuses_done_running_and_queued_actions(start_listener, recorder):
    iconik = recorder()
    live = start_listener(iconik_config(iconik.url))
    make_ready(live)
    [action] = settle(live.runtime)
    assert action["status"] == "done"
    answer = live.admin(f"/api/actions/{action['id']}/retry", "POST")
    assert answer.status_code == 409
    assert answer.json() == {"status": "error", "message": f"action {action['id']} is done; it does not run again"}
    for status, words in (("running", "is running"), ("queued", "already queued")):
        with live.runtime.engine.begin() as conn:
            conn.execute(update(actions).where(actions.c.id == action["id"]).values(status=status))
        answer = live.admin(f"/api/actions/{action['id']}/retry", "POST")
        assert answer.status_code == 409 and words in answer.json()["message"]
    assert live.admin("/api/actions/999999/retry", "POST").status_code == 404
    assert len(iconik.requests) == 1


def test_replay_records_a_new_event_and_never_reruns_done_work(start_listener, recorder):
    iconik = recorder()
    live = start_listener(iconik_config(iconik.url))
    make_ready(live)
    settle(live.runtime)
    create_event = rows(live.runtime, "events")[0]
    answer = live.admin(f"/api/events/{create_event['id']}/replay", "POST")
    assert answer.status_code == 200, answer.text
    replayed = answer.json()
    assert (replayed["status"], replayed["replay_of"], replayed["actions"]) == ("accepted", create_event["id"], [])
    assert replayed["reason"] == f"replay of event {create_event['id']}"
    new_event = rows(live.runtime, "events", id=replayed["event_id"])[0]
    assert (new_event["status"], new_event["reason"]) == ("accepted", f"replay of event {create_event['id']}")
    assert new_event["item_id"] == create_event["item_id"] and new_event["dedupe_key"] is None
    settle(live.runtime)
    assert len(iconik.requests) == 1  # the analysis is done: it does not run again
    assert len(rows(live.runtime, "actions")) == 1


def test_replay_creates_only_work_that_never_existed(start_listener, recorder):
    sink = recorder(default=(200, {}))
    before = start_listener(base_config())  # no workflow yet: the media is recorded, nothing follows
    first = screen9_ready(before)
    assert rows(before.runtime, "actions") == []
    workflow = {"name": "tell-cms", "source": "screen9", "on": ["ready"], "action": "notify", "url": sink.url}
    after = start_listener(base_config(workflows=[workflow]))  # the workflow added since
    answer = after.admin(f"/api/events/{first['event_id']}/replay", "POST").json()
    assert answer["status"] == "accepted" and len(answer["actions"]) == 1
    settle(after.runtime)
    assert len(sink.requests) == 1 and sink.requests[0].json()["state"] == "ready"
    again = after.admin(f"/api/events/{first['event_id']}/replay", "POST").json()
    assert again["actions"] == []  # the notify exists (done): not created again
    settle(after.runtime)
    assert len(sink.requests) == 1


def test_replay_of_an_unknown_event_is_404_and_both_need_the_admin_token(listener):
    assert listener.admin("/api/events/424242/replay", "POST").status_code == 404
    for path in ("/api/events/1/replay", "/api/actions/1/retry"):
        answer = listener.http.post(listener.url + path, timeout=10)
        assert answer.status_code == 401
        answer = listener.http.post(listener.url + path, headers={"Authorization": f"Bearer {TOKENS['scoopa']}"},
                                    timeout=10)
        assert answer.status_code == 401
