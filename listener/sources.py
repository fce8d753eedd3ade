"""The configured sources, each bound to its handler module and options."""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from types import ModuleType

from config import ListenerConfig, SourceConfig
from handlers import load_handler
from handlers.base import Context


@dataclass(frozen=True)
class Source:
    name: str
    config: SourceConfig
    handler: ModuleType
    context: Context

    @property
    def token(self) -> str | None:
        return self.config.token

    @property
    def allow_ips(self) -> list[IPv4Network | IPv6Network]:
        return self.config.allow_ips


def build_sources(config: ListenerConfig) -> dict[str, Source]:
    sources = {}
    for name, source_config in config.sources.items():
        handler = load_handler(name, source_config.handler)
        options_model = getattr(handler, "Options", None)
        options = options_model.model_validate(source_config.handler_options) if options_model else None
        context = Context(
            source=name,
            options=options,
            download=source_config.download,
            workflows=tuple(config.workflows_for(name)),
        )
        sources[name] = Source(name=name, config=source_config, handler=handler, context=context)
    return sources
