"""The shape of ``listener.yaml`` (SPEC 5), as pydantic models.

Cross-references (a workflow naming a server or a source) and per-handler
options are checked in ``config.loader``, which knows the handlers.
"""
from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_RETRY = [60.0, 600.0, 1200.0]  # scoopa's own webhook schedule: 1, 10, 20 minutes
ONE_MIB = 1024 * 1024

RetrySchedule = list[float]


def _check_retry(value: list[float] | None) -> list[float] | None:
    if value is not None and any(delay < 0 for delay in value):
        raise ValueError("retry delays must be zero or more seconds")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimit(_Strict):
    calls: int = Field(gt=0)
    per_seconds: float = Field(default=1.0, gt=0)


class SourceConfig(BaseModel):
    """One platform calling us. Keys not listed here are the handler's own options."""

    model_config = ConfigDict(extra="allow")

    token: str | None = None
    allow_ips: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    handler: str | None = None  # importable module; default: handlers.<source name>
    retry: RetrySchedule | None = None
    download: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)
    allow_private_hosts: bool = False
    max_body_bytes: int = Field(default=ONE_MIB, gt=0)
    rate_limit: RateLimit | None = None  # calls per window, over all web processes; 429 beyond

    _check_retry = field_validator("retry")(_check_retry)

    @field_validator("token")
    @classmethod
    def _blank_token_is_none(cls, value: str | None) -> str | None:
        # `token: ${UNSET_VARIABLE}` reads as "no token": the source is open (and logged so).
        return value or None

    @property
    def handler_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class FtpServer(_Strict):
    host: str
    port: int = Field(default=21, gt=0, lt=65536)
    username: str = "anonymous"
    password: str = ""
    tls: bool = False  # explicit FTPS (AUTH TLS), data channel protected too
    # With tls: check the server's certificate against the system CAs, or against ca_file
    # (a private CA or a self-signed certificate). verify_tls: false skips the check.
    verify_tls: bool = True
    ca_file: Path | None = None
    passive: bool = True
    max_connections: int = Field(default=2, ge=1)
    timeout: float = Field(default=30.0, gt=0)


class Workflow(_Strict):
    name: str
    source: str
    action: Literal["ftp_push", "notify"]
    folders: list[int | str] | Literal["all"] = "all"
    filter: str | None = None
    on: list[str] | None = None  # item states that start it; default: the source's default state
    ftp_server: str | None = None
    target_dir: str = "/"
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    retry: RetrySchedule | None = None
    enabled: bool = True

    _check_retry = field_validator("retry")(_check_retry)

    def matches(self, item_data: dict[str, Any]) -> bool:
        """Whether an item's folder and file name fall under this workflow."""
        if self.folders != "all":
            wanted = {str(folder) for folder in self.folders}
            if str(item_data.get("folder_id")) not in wanted:
                return False
        return not self.filter or self.filter in str(item_data.get("file_name", ""))


class ListenerConfig(_Strict):
    download_dir: Path = Path("var/downloads")
    retry: RetrySchedule = Field(default_factory=lambda: list(DEFAULT_RETRY))
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    ftp_servers: dict[str, FtpServer] = Field(default_factory=dict)
    workflows: list[Workflow] = Field(default_factory=list)

    _check_retry = field_validator("retry")(_check_retry)

    def retry_schedule(self, source: str | None, workflow: str | None = None) -> list[float]:
        """The most specific schedule: the workflow's, else the source's, else the default."""
        if workflow:
            for flow in self.workflows:
                if flow.name == workflow and flow.retry is not None:
                    return flow.retry
        if source and source in self.sources and self.sources[source].retry is not None:
            return self.sources[source].retry or []
        return self.retry

    def workflow(self, name: str) -> Workflow | None:
        return next((flow for flow in self.workflows if flow.name == name), None)

    def workflows_for(self, source: str) -> list[Workflow]:
        return [flow for flow in self.workflows if flow.source == source and flow.enabled]
