"""Property-based tests: whatever a caller sends, no 500, nothing recorded for a refusal, no way past a token."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from listener.app import create_app
from listener.models import events, items
from tests.conftest import TOKENS, load_fixture

ENDPOINTS = [
    ("POST", "/create", "iconik", load_fixture("iconik", "create__asset")),
    ("POST", "/proxy", "iconik", load_fixture("iconik", "proxy__closed")),
    ("POST", "/scoopa", "scoopa", load_fixture("scoopa", "new_file__video")),
    ("POST", "/dynamic-ingest", "brightcove", load_fixture("brightcove", "title_create__success")),
    ("GET", "/screen9", "screen9", load_fixture("screen9", "upload__success")),
    ("POST", "/screen9", "screen9", load_fixture("screen9", "upload__success")),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw: Any, fixture: dict[str, Any]) -> dict[str, Any]:
    """A valid payload with some fields dropped, retyped or added."""
    payload = dict(fixture)
    for key in draw(st.lists(st.sampled_from(sorted(fixture)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del payload[key]
        else:
            payload[key] = draw(json_values)
    payload.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return payload


def bodies(fixture: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
        json_values.map(lambda v: json.dumps(v).encode()),
        mutated(fixture).map(lambda v: json.dumps(v).encode()),
        st.just(json.dumps(fixture).encode()),
    )


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
requests_strategy = st.fixed_dictionaries({
    "auth": st.sampled_from(["bearer", "header", "query", "none", "wrong", "other-source", "bearer-prefix"]),
    "content_type": st.one_of(st.none(), st.sampled_from(["application/json", "text/plain", "application/xml",
                                                          "application/x-www-form-urlencoded"]), header_text),
    "query": st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=20), max_size=3),
    "headers": st.dictionaries(st.sampled_from(["X-Extra", "X-Forwarded-For", "Accept", "User-Agent"]), header_text,
                               max_size=2),
})


def counts(engine: Any) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(items)).scalar(),
                conn.execute(select(func.count()).select_from(events)).scalar())


@pytest.mark.parametrize(("method", "path", "source", "fixture"), ENDPOINTS, ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS])
def test_any_request_is_answered_without_500_and_refusals_change_nothing(make_runtime, method, path, source,
                                                                         fixture):
    runtime = make_runtime()
    client = create_app(runtime).test_client()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=requests_strategy, body=bodies(fixture), screen9=mutated(fixture))
    def check(request: dict[str, Any], body: bytes, screen9: dict[str, Any]) -> None:
        headers = dict(request["headers"])
        query = {k: v for k, v in request["query"].items() if k != "token"}
        token = TOKENS[source]
        authorised = request["auth"] in ("bearer", "header", "query")
        if request["auth"] == "bearer":
            headers["Authorization"] = f"Bearer {token}"
        elif request["auth"] == "header":
            headers["X-Listener-Token"] = token
        elif request["auth"] == "query":
            query["token"] = token
        elif request["auth"] == "wrong":
            headers["Authorization"] = f"Bearer {token}x"
        elif request["auth"] == "other-source":
            headers["Authorization"] = f"Bearer {TOKENS['scoopa' if source != 'scoopa' else 'iconik']}"
        elif request["auth"] == "bearer-prefix":
            headers["Authorization"] = f"Bearer {token[:-1]}"
        if request["content_type"] is not None:
            headers["Content-Type"] = request["content_type"]
        before = counts(runtime.engine)
        if method == "GET":
            params = {k: str(v) for k, v in screen9.items()} | query
            answer = client.get(path, query_string=params, headers=headers)
        elif source == "screen9":
            answer = client.post(path, query_string=query, data={k: str(v) for k, v in screen9.items()},
                                 headers={k: v for k, v in headers.items() if k != "Content-Type"})
        else:
            answer = client.post(path, query_string=query, data=body, headers=headers)
        after = counts(runtime.engine)

        assert answer.status_code < 500, answer.get_data(as_text=True)
        assert answer.is_json, answer.get_data(as_text=True)
        if not authorised:
            assert answer.status_code == 401
        if answer.status_code != 200:
            assert after == before, f"{answer.status_code} but something was recorded"
            assert answer.get_json()["message"]
        else:
            assert answer.get_json()["status"] in ("accepted", "duplicate", "ignored")

    check()
