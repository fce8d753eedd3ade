"""The answers of SPEC 2 that every endpoint shares: auth, limits, bad input, methods, outages."""
from __future__ import annotations

import json
import logging
import sqlite3
import time

import pytest
from sqlalchemy.engine import make_url

from listener.migrate import upgrade
from tests.conftest import TOKENS, base_config, load_fixture, rows
from tests.support.tcp_proxy import TcpProxy

CREATE = load_fixture("iconik", "create__asset")


def assert_nothing_recorded(live) -> None:
    assert rows(live.runtime, "items") == []
    assert rows(live.runtime, "events") == []


# --- authentication -------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["bearer", "header", "query"])
def test_token_accepted_in_each_form(listener, how):
    token = TOKENS["iconik"]
    path, headers = "/create", {}
    if how == "bearer":
        headers["Authorization"] = f"Bearer {token}"
    elif how == "header":
        headers["X-Listener-Token"] = token
    else:
        path += f"?token={token}"
    answer = listener.post(path, CREATE, token=None, headers=headers)
    assert answer.status_code == 200, answer.text


def test_missing_token_is_401_and_records_nothing(listener):
    answer = listener.post("/create", CREATE, token=None)
    assert answer.status_code == 401
    assert "missing token" in answer.json()["message"]
    assert_nothing_recorded(listener)


def test_wrong_token_is_401_and_never_logged(listener, caplog):
    caplog.set_level(logging.INFO)
    answer = listener.post("/create", CREATE, token="not-the-token-xyz")
    assert answer.status_code == 401
    assert answer.json()["message"] == "wrong token"
    assert "not-the-token-xyz" not in caplog.text
    assert_nothing_recorded(listener)


def test_another_sources_token_does_not_open_an_endpoint(listener):
    answer = listener.post("/create", CREATE, token=TOKENS["scoopa"])
    assert answer.status_code == 401


def test_source_without_token_is_open_and_says_so_at_startup(start_listener, caplog):
    caplog.set_level(logging.WARNING)
    config = base_config()
    config["sources"]["iconik"]["token"] = ""
    live = start_listener(config)
    assert "source iconik has no token" in caplog.text
    assert live.post("/create", CREATE, token=None).status_code == 200


def test_caller_outside_allow_ips_is_403(start_listener):
    config = base_config()
    config["sources"]["iconik"]["allow_ips"] = ["10.0.0.0/8"]
    live = start_listener(config)
    answer = live.post("/create", CREATE)
    assert answer.status_code == 403
    assert "allow_ips" in answer.json()["message"]
    assert_nothing_recorded(live)


def test_caller_inside_allow_ips_is_accepted(start_listener):
    config = base_config()
    config["sources"]["iconik"]["allow_ips"] = ["10.0.0.0/8", "127.0.0.0/8"]
    assert start_listener(config).post("/create", CREATE).status_code == 200


# --- bodies ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"realm": "entity", ', "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got an array"),
        (b'"a string"', "expected a JSON object, got a string"),
        (b"null", "expected a JSON object, got null"),
        (b"42", "got a number"),
        (b"", "empty"),
        (b'{"object_id": "\xff\xfe"}', "not valid UTF-8"),
        (b"realm=entity&operation=create&object_id=x", "not valid JSON"),
        (b'{"realm": NaN}', "NaN is not valid JSON"),
        (b'{"realm": "entity", "operation": "create", "object_id": "a\\u0000b"}', "NUL"),
        (b'{"realm": "entity", "operation": "create", "object_id": "\\ud800"}', "surrogate"),
        (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    ],
)
def test_bad_bodies_are_400_naming_the_problem(listener, raw, message):
    answer = listener.post("/create", data=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["status"] == "error"
    assert message in answer.json()["message"]
    assert_nothing_recorded(listener)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"object_id": 12}, "object_id"),
        ({"object_id": ""}, "object_id"),
        ({"realm": None}, "realm"),
        ({"data": "not-an-object"}, "data"),
    ],
)
def test_mistyped_fields_are_400_naming_the_field(listener, change, field):
    answer = listener.post("/create", CREATE | change)
    assert answer.status_code == 400
    assert answer.json()["message"].startswith(field)
    assert_nothing_recorded(listener)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_json_object_accepted_whatever_the_content_type(listener, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    answer = listener.post("/create", data=json.dumps(CREATE).encode(), headers=headers)
    assert answer.status_code == 200, answer.text


def test_unknown_fields_and_query_parameters_are_ignored(listener):
    answer = listener.post("/create?utm_source=x&debug=1", CREATE | {"surprise": {"nested": [1, 2]}})
    assert answer.status_code == 200
    assert answer.json()["status"] == "accepted"


def test_body_over_the_limit_is_413(start_listener):
    config = base_config()
    config["sources"]["iconik"]["max_body_bytes"] = 2048
    live = start_listener(config)
    big = CREATE | {"padding": "x" * 4096}
    answer = live.post("/create", big)
    assert answer.status_code == 413
    assert "2048" in answer.json()["message"]
    assert_nothing_recorded(live)


def test_chunked_body_over_the_limit_is_413(start_listener):
    config = base_config()
    config["sources"]["iconik"]["max_body_bytes"] = 2048
    live = start_listener(config)

    def chunks():
        yield b'{"padding": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}'

    answer = live.post("/create", data=chunks())
    assert answer.status_code == 413
    assert_nothing_recorded(live)


def test_default_limit_is_one_mebibyte(listener):
    answer = listener.post("/create", CREATE | {"padding": "x" * (1024 * 1024)})
    assert answer.status_code == 413


# --- methods and routes ---------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [("GET", "/create"), ("PUT", "/proxy"), ("DELETE", "/scoopa"),
                                              ("GET", "/dynamic-ingest"), ("PUT", "/screen9")])
def test_wrong_method_is_405(listener, method, path):
    answer = listener.http.request(method, listener.url + path, timeout=10)
    assert answer.status_code == 405
    assert answer.json()["status"] == "error"


def test_unknown_path_is_a_json_404(listener):
    answer = listener.get("/nowhere")
    assert answer.status_code == 404
    assert answer.json()["status"] == "error"


def test_unconfigured_source_has_no_endpoint(start_listener):
    config = base_config()
    del config["sources"]["screen9"]
    live = start_listener(config)
    assert live.get("/screen9", params={"mediaid": "x"}).status_code == 404


# --- the database cannot take the event -----------------------------------------------------

def test_the_same_process_answers_200_again_once_the_database_is_back(start_listener, database_url, tmp_path,
                                                                      monkeypatch):
    """Write connections are kept between webhooks: one that an outage broke must not stay broken."""
    proxy, lock_holder = None, None
    if database_url.startswith("sqlite"):
        monkeypatch.setenv("SQLITE_BUSY_TIMEOUT_MS", "200")  # read when this database's engine is made
        url = f"sqlite:///{tmp_path / 'own.db'}"
        upgrade(url)
    else:
        real = make_url(database_url)
        proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432).start()
        url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    live = start_listener(database_url=url)
    try:
        assert live.post("/create", CREATE).status_code == 200
        if proxy:
            proxy.stop()  # the kept connections are cut, and new ones refused
        else:
            lock_holder = sqlite3.connect(tmp_path / "own.db")
            lock_holder.execute("BEGIN EXCLUSIVE")
        assert [live.post("/create", CREATE).status_code for _ in range(3)] == [503] * 3
        if proxy:
            proxy.start()
        else:
            lock_holder.rollback()
        assert [live.post("/create", CREATE).status_code for _ in range(3)] == [200] * 3
    finally:
        if lock_holder:
            lock_holder.close()
        if proxy:
            proxy.stop()


def test_database_down_is_503_with_retry_after(start_listener, database_url, tmp_path):
    if database_url.startswith("sqlite"):
        dead = f"sqlite:///{tmp_path}"  # a directory: SQLite cannot open it
    else:
        dead = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens on port 1
    live = start_listener(database_url=dead)
    answer = live.post("/create", CREATE)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert "database unavailable" in answer.json()["message"]


# --- rate limit -----------------------------------------------------------------------------

def test_rate_limit_answers_429_with_retry_after(start_listener):
    config = base_config()
    config["sources"]["screen9"]["rate_limit"] = {"calls": 3, "per_seconds": 60}
    live = start_listener(config)
    params = {"status": "success", "token": TOKENS["screen9"]}
    # The limit counts in fixed windows of the clock's minutes: five calls across a minute's turn would be
    # counted in two windows (seen once, at 22:29:59 and 22:30:00), so they start clear of its last seconds.
    left_in_window = 60 - time.time() % 60
    if left_in_window < 10:  # noqa: PLR2004 - five local calls take well under a second
        time.sleep(left_in_window + 0.1)
    answers = [live.get("/screen9", params=params | {"mediaid": f"m{n}"}) for n in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
    assert "rate limit of 3 calls per 60 s" in answers[3].json()["message"]
    assert len(rows(live.runtime, "items")) == 3
    # another source has its own allowance, and strangers do not use up this one
    assert live.post("/create", CREATE).status_code == 200
    assert live.get("/screen9", params={"mediaid": "x", "token": "wrong"}).status_code == 401


def test_rate_limit_is_not_enforced_when_redis_is_down(start_listener):
    config = base_config()
    config["sources"]["iconik"]["rate_limit"] = {"calls": 1}
    live = start_listener(config, redis_url="redis://127.0.0.1:1/0")
    assert [live.post("/create", CREATE).status_code for _ in range(3)] == [200, 200, 200]

