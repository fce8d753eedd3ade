"""Workflows (SPEC 5): when an item enters a state, the configured work that follows."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from config import Workflow
from handlers.base import ActionRequest


def workflow_actions(
    handler: ModuleType, entered: Iterable[str], data: Mapping[str, Any], workflows: Iterable[Workflow]
) -> list[ActionRequest]:
    """The actions of every workflow that acts on a state the item just entered."""
    default_on = getattr(handler, "DEFAULT_ON", ())
    repeatable = getattr(handler, "REPEATABLE", ())
    requests = []
    workflows = list(workflows)
    for state in entered:
        for flow in workflows:
            if state not in (flow.on or default_on) or not flow.matches(dict(data)):
                continue
            requests.append(
                ActionRequest(
                    kind=flow.action,
                    target=describe_target(flow),
                    workflow=flow.name,
                    # A repeatable state's work is coalesced while queued instead of done once.
                    once=None if state in repeatable else f"{flow.name}:{state}",
                )
            )
    return requests


def describe_target(flow: Workflow) -> str:
    if flow.action == "ftp_push":
        return f"{flow.ftp_server}:{flow.target_dir}"
    return flow.url or ""
