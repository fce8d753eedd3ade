"""Read ``listener.yaml``: substitute ``${NAME}``, validate, check cross-references.

Every problem is reported as ``<key path>: <problem>``, for example
``workflows[0].ftp_server: no server named 'playot'``, so a person can find it.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.model import ListenerConfig
from handlers import HandlerNotFound, load_handler

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SECRET_KEYS = ("token", "password", "secret", "auth_token", "authorization", "app_id")


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. In YAML 1.1 a workflow's `on:` key would read as True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class ConfigError(ValueError):
    """The configuration cannot be used; the message names every problem."""

    def __init__(self, problems: list[str], path: Path | None = None) -> None:
        self.problems = problems
        where = f"{path}: " if path else ""
        super().__init__(where + "invalid configuration:\n  " + "\n  ".join(problems))


def substitute(value: Any, environ: Mapping[str, str]) -> Any:
    """Replace ``${NAME}`` (or ``${NAME:-default}``) in every string; unset means empty."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [substitute(element, environ) for element in value]
    if isinstance(value, dict):
        return {key: substitute(element, environ) for key, element in value.items()}
    return value


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def parse_config(raw: Any, path: Path | None = None) -> ListenerConfig:
    """Validate an already-substituted document into a ListenerConfig."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping of keys"], path)
    try:
        config = ListenerConfig.model_validate(raw)
    except ValidationError as error:
        problems = []
        for detail in error.errors():
            loc = tuple(p for p in detail["loc"] if not str(p).startswith(("function-", "literal[")))
            problems.append(f"{_location(loc)}: {detail['msg']}")
        raise ConfigError(problems, path) from None
    problems = _check_references(config)
    if problems:
        raise ConfigError(problems, path)
    return config


def _check_references(config: ListenerConfig) -> list[str]:
    problems: list[str] = []
    endpoints: dict[str, str] = {}
    handlers = {}
    for name, source in config.sources.items():
        try:
            handler = load_handler(name, source.handler)
        except HandlerNotFound as error:
            problems.append(f"sources.{name}.handler: {error}")
            continue
        handlers[name] = handler
        options_model = getattr(handler, "Options", None)
        if options_model is not None:
            try:
                options_model.model_validate(source.handler_options)
            except ValidationError as error:
                for detail in error.errors():
                    problems.append(f"sources.{name}.{_location(detail['loc'])}: {detail['msg']}")
        elif source.handler_options:
            unknown = ", ".join(sorted(source.handler_options))
            problems.append(f"sources.{name}: unknown keys {unknown}")
        for endpoint in handler.ENDPOINTS:
            if endpoint in endpoints:
                problems.append(
                    f"sources.{name}: endpoint {endpoint} is already served by source {endpoints[endpoint]}"
                )
            endpoints[endpoint] = name

    seen_names: set[str] = set()
    for index, flow in enumerate(config.workflows):
        where = f"workflows[{index}]"
        if flow.name in seen_names:
            problems.append(f"{where}.name: another workflow is named '{flow.name}'")
        seen_names.add(flow.name)
        if flow.source not in config.sources:
            problems.append(f"{where}.source: no source named '{flow.source}'")
        elif flow.source in handlers:
            states = handlers[flow.source].STATES
            for state in flow.on or []:
                if state not in states:
                    problems.append(
                        f"{where}.on: '{state}' is not a state of {flow.source} (one of: {', '.join(states)})"
                    )
        if flow.action == "ftp_push":
            if not flow.ftp_server:
                problems.append(f"{where}.ftp_server: required for action ftp_push")
            elif flow.ftp_server not in config.ftp_servers:
                problems.append(f"{where}.ftp_server: no server named '{flow.ftp_server}'")
        if flow.action == "notify":
            if not flow.url:
                problems.append(f"{where}.url: required for action notify")
            elif not flow.url.startswith(("http://", "https://")):
                problems.append(f"{where}.url: must be an http or https URL")
    return problems


def load_config(path: Path, environ: Mapping[str, str]) -> ListenerConfig:
    """Read, substitute and validate the YAML file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"cannot read the file: {error.strerror}"], path) from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}"], path) from None
    return parse_config(substitute(raw, environ), path)


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of a config document with tokens, passwords and auth headers masked."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(element, key) for element in value]
    if value and any(secret in key.lower() for secret in SECRET_KEYS):
        return "********"
    return value
