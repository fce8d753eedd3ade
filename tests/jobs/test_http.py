"""The jobs' HTTP session: the environment's proxy and CA settings, read once per host."""
from __future__ import annotations

import requests
import requests.sessions

from jobs.http import _Session

URLS = ("https://app.iconik.io/API/x", "https://internal.example/x", "http://app.iconik.io/x")


def test_it_takes_the_same_settings_from_the_environment_as_requests(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    ours, theirs = _Session(), requests.Session()
    for url in URLS:
        for _ in range(2):  # the second time from what it kept
            assert ours.merge_environment_settings(url, {}, None, None, None) == \
                theirs.merge_environment_settings(url, {}, None, None, None)
    assert ours.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"]["https"] == \
        "http://proxy.example:3128"
    assert ours.merge_environment_settings(URLS[1], {}, None, None, None)["proxies"] == {}


def test_the_environment_is_read_once_per_host(monkeypatch):
    reads = []
    real = requests.sessions.get_environ_proxies

    def counted(url: str, **options: object) -> dict[str, str]:
        reads.append(url)
        return real(url, **options)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    session = _Session()
    for _ in range(3):
        for url in URLS:
            session.merge_environment_settings(url, {}, None, None, None)
    assert reads == list(URLS)


def test_what_a_caller_changes_does_not_stay(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = _Session()
    session.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"]["https"] = "http://other:1"
    assert session.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"]["https"] == \
        "http://proxy.example:3128"
