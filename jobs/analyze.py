"""Submit an iconik asset for analysis (SPEC 3): POST {api_url}{analysis_path}.

2xx: submitted. 429, 5xx, timeouts and connection errors: retried on the
schedule. Any other 4xx: failed at once with iconik's message.
"""
from __future__ import annotations

import requests

from handlers.iconik import Options, analysis_url
from jobs.context import ActionContext
from jobs.errors import ActionError, PermanentError
from jobs.http import Reply, session


def run(context: ActionContext) -> None:
    options: Options = context.source_options() or Options()
    url = analysis_url(options, context.item["key"])
    headers = {
        "App-ID": options.app_id,
        "Auth-Token": options.auth_token,
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    try:
        response = session().post_without_body(url, headers, options.timeout)
    except requests.RequestException as error:
        raise ActionError(f"cannot reach iconik at {url}: {type(error).__name__}: {error}") from None
    if response.ok:
        return
    message = f"iconik answered {response.status_code}: {_message(response)}"
    if response.status_code == 429 or response.status_code >= 500:
        raise ActionError(message)
    raise PermanentError(message)


def _message(response: Reply) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason
    if isinstance(body, dict):
        errors = body.get("errors") or body.get("error") or body.get("message")
        if errors:
            return str(errors)[:300]
    return str(body)[:300]
