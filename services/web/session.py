"""The console's session: who is signed in and the CSRF token, in one encrypted cookie.

The cookie holds `{clientId, accessToken, csrf}` encrypted and authenticated with Fernet
(a key derived from the deployment's secret), so the browser carries the credentials but
can neither read nor alter them, and any console replica can serve any request (no
server-side session store). HttpOnly keeps scripts from it; SameSite=Strict keeps other
sites' requests from carrying it; the CSRF token, required on every POST, covers the rest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "flotilla_session"
MAX_AGE_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Session:
    csrf: str
    client_id: str | None = None
    access_token: str | None = None

    @property
    def signed_in(self) -> bool:
        return bool(self.client_id and self.access_token)

    def credentials(self) -> dict[str, str] | None:
        if not self.signed_in:
            return None
        return {"clientId": self.client_id or "", "accessToken": self.access_token or ""}

    def __repr__(self) -> str:  # never print a token, even in a traceback
        return f"Session(client_id={self.client_id!r}, signed_in={self.signed_in})"


def new_session() -> Session:
    return Session(csrf=secrets.token_urlsafe(24))


class SessionCodec:
    def __init__(self, secret_key: str) -> None:
        # A key of its own, derived from the deployment's one secret (domain-separated
        # from the queue's use of that secret).
        digest = hashlib.sha256(b"flotilla-web-session\0" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def encode(self, session: Session) -> str:
        body = {"csrf": session.csrf, "clientId": session.client_id, "at": session.access_token}
        return self._fernet.encrypt(json.dumps(body).encode()).decode()

    def decode(self, cookie: str | None) -> Session | None:
        """The session in the cookie, or None if it is missing, forged, altered or stale."""
        if not cookie:
            return None
        try:
            body = json.loads(self._fernet.decrypt(cookie.encode(), ttl=MAX_AGE_S))
            return Session(
                csrf=str(body["csrf"]), client_id=body["clientId"], access_token=body["at"]
            )
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None


def csrf_ok(session: Session | None, submitted: str | None) -> bool:
    return bool(session and submitted and hmac.compare_digest(session.csrf, submitted))
