"""The two outcomes of auth that reach the caller: 401 and 403.

The same classes as the rest of the protocol's vocabulary (shared.errors), so whichever
module raises one, the error boundary answers 401 or 403 in `{code, message,
requestInfo}`; there is no second, look-alike class to raise by mistake (a 500). The 403
message is built where scopes are checked, in shared.api.Call.authorize.
"""

from __future__ import annotations

from shared.errors import AuthenticationFailed, InsufficientScopes

__all__ = ["AuthenticationFailed", "InsufficientScopes"]
