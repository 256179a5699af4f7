"""The two outcomes of auth that reach the caller: 401 and 403.

Plain exceptions carrying the protocol code; the HTTP error boundary turns them into
`{code, message, requestInfo}` responses. Nothing here knows about aiohttp.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar


class AuthenticationFailed(Exception):
    """Credentials were presented and are not acceptable (bad mac, expired, ...)."""

    code: ClassVar[str] = "AuthenticationFailed"
    status: ClassVar[int] = 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InsufficientScopes(Exception):
    """The caller is authenticated but its scopes do not satisfy the endpoint's."""

    code: ClassVar[str] = "InsufficientScopes"
    status: ClassVar[int] = 403

    def __init__(
        self,
        missing: Any,
        *,
        required: Any = None,
        client_id: str | None = None,
    ) -> None:
        self.missing = missing
        self.required = required if required is not None else missing
        self.client_id = client_id
        self.message = _insufficient_message(client_id, self.missing, self.required)
        super().__init__(self.message)


def _insufficient_message(client_id: str | None, missing: Any, required: Any) -> str:
    # Same content as upstream's message: who, what is missing, what was required.
    who = f"Client ID {client_id}" if client_id else "This request (no credentials)"
    return (
        f"{who} does not have sufficient scopes and is missing the following scopes:\n\n"
        f"```\n{json.dumps(missing, indent=2)}\n```\n\n"
        "This request requires the client to satisfy the following scope expression:\n\n"
        f"```\n{json.dumps(required, indent=2)}\n```"
    )
