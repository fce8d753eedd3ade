"""Configuration (SPEC 5): substitution, validation messages naming the key, the shipped example."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config import ConfigError, Settings, load_config, mask_secrets
from config.loader import parse_config, substitute

ROOT = Path(__file__).resolve().parent.parent


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value.problems


def test_example_config_loads_as_it_is():
    config = load_config(ROOT / "config" / "listener.yaml", {})
    assert set(config.sources) == {"iconik", "scoopa", "brightcove", "screen9"}
    assert config.sources["iconik"].token is None  # unset variable: open source
    assert config.workflows[1].on == ["ingested", "failed"]  # `on:` is a key, not YAML 1.1's True
    assert config.retry_schedule("scoopa", "news-to-playout") == [60, 600, 1200, 3600]
    assert config.retry_schedule("scoopa") == [30, 300]
    assert config.retry_schedule("brightcove") == [60, 600, 1200]


def test_variables_are_substituted_everywhere():
    raw = {"a": "${TOKEN}", "b": ["x-${TOKEN}-y"], "c": {"d": "${MISSING}", "e": "${MISSING:-fallback}"}}
    assert substitute(raw, {"TOKEN": "s3"}) == {"a": "s3", "b": ["x-s3-y"], "c": {"d": "", "e": "fallback"}}


def test_example_config_takes_tokens_from_the_environment():
    config = load_config(ROOT / "config" / "listener.yaml", {"ICONIK_HOOK_TOKEN": "abc"})
    assert config.sources["iconik"].token == "abc"


def test_unknown_ftp_server_is_named():
    raw = {"sources": {"scoopa": {}}, "ftp_servers": {"playout": {"host": "h"}},
           "workflows": [{"name": "w", "source": "scoopa", "action": "ftp_push", "ftp_server": "playot"}]}
    assert problems_of(raw) == ["workflows[0].ftp_server: no server named 'playot'"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"retry": [-1]}, "retry: Value error, retry delays must be zero or more seconds"),
        ({"sources": {"iconik": {"api_url": 3}}}, "sources.iconik.api_url: Input should be a valid string"),
        ({"sources": {"iconik": {"colour": "red"}}}, "sources.iconik.colour: Extra inputs are not permitted"),
        ({"sources": {"nowhere": {}}}, "sources.nowhere.handler: no handler module 'handlers.nowhere'"),
        ({"sources": {"screen9": {"allow_ips": ["not-a-net"]}}}, "sources.screen9.allow_ips[0]"),
        ({"ftp_servers": {"p": {"host": "h", "port": 0}}}, "ftp_servers.p.port"),
        ({"sources": {"brightcove": {}}, "workflows": [{"name": "w", "source": "brightcove", "on": ["ingestd"],
                                                       "action": "notify", "url": "https://x"}]},
         "workflows[0].on: 'ingestd' is not a state of brightcove"),
        ({"workflows": [{"name": "w", "source": "scoopa", "action": "notify", "url": "https://x"}]},
         "workflows[0].source: no source named 'scoopa'"),
        ({"sources": {"scoopa": {}}, "workflows": [{"name": "w", "source": "scoopa", "action": "notify"}]},
         "workflows[0].url: required for action notify"),
        ({"sources": {"scoopa": {}}, "workflows": [{"name": "w", "source": "scoopa", "action": "teleport"}]},
         "workflows[0].action"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_problems_name_the_key(raw, expected):
    assert any(problem.startswith(expected) for problem in problems_of(raw)), problems_of(raw)


def test_two_sources_cannot_share_an_endpoint():
    raw = {"sources": {"iconik": {}, "iconik2": {"handler": "handlers.iconik"}}}
    assert any("endpoint /create is already served by source iconik" in p for p in problems_of(raw))


def test_invalid_config_stops_startup_with_the_message(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sources:\n  scoopa: {}\nworkflows:\n  - {name: w, source: scoopa, action: ftp_push, "
                    "ftp_server: playot}\n")
    env = {"LISTENER_CONFIG": str(path), "PATH": "/usr/bin:/bin"}
    for command in (["check-config"], ["worker"], ["run"]):
        done = subprocess.run([sys.executable, "-m", "listener", *command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert "workflows[0].ftp_server: no server named 'playot'" in done.stderr


def test_check_config_masks_secrets(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "ICONIK_HOOK_TOKEN": "hook-secret-1", "PLAYOUT_FTP_PASSWORD": "ftp-secret-2",
           "CMS_TOKEN": "cms-secret-3", "ICONIK_AUTH_TOKEN": "auth-secret-4"}
    done = subprocess.run([sys.executable, "-m", "listener", "check-config"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for secret in env.values():
        if "secret" in secret:
            assert secret not in done.stdout
    assert '"token": "********"' in done.stdout


def test_mask_secrets_masks_nested_auth_headers():
    masked = mask_secrets({"workflows": [{"headers": {"Authorization": "Bearer x"}}], "host": "h"})
    assert masked == {"workflows": [{"headers": {"Authorization": "********"}}], "host": "h"}


def test_settings_from_environment():
    settings = Settings.from_env({"DATABASE_URL": "postgres://u@h/db", "PORT": "9000", "REDIS_URL": ""})
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.port == 9000
    assert settings.redis_url is None
    assert settings.effective_redis_url.startswith("unix://")
    assert Settings.from_env({}).database_url.startswith("sqlite:///")
