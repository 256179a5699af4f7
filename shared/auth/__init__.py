"""Pure (no I/O) authentication and authorisation: Hawk, certificates, roles, scopes.

The HTTP layer gathers a `HawkRequest`, loads the clients named by
`client_ids_needed`, calls `authenticate`, and checks scopes with `AuthResult.satisfies`
(shared.api's Call.authorize answers the 403).
"""

from shared.auth.authenticate import (
    ANONYMOUS_SCOPE,
    AuthResult,
    ClientRecord,
    anonymous,
    authenticate,
    client_ids_needed,
)
from shared.auth.certificates import create_temporary_credentials
from shared.auth.errors import AuthenticationFailed, InsufficientScopes
from shared.auth.hawk import HawkRequest, request_port, split_host_header
from shared.auth.roles import (
    RoleCycleError,
    RoleError,
    RoleResolver,
    check_no_cycle,
    validate_roles,
)
from shared.auth.scopes import (
    ScopeExpr,
    ScopeExpressionError,
    ScopeSet,
    expand_template,
    is_valid_scope,
    missing,
    normalize_scopes,
    satisfies,
)

__all__ = [
    "ANONYMOUS_SCOPE",
    "AuthResult",
    "AuthenticationFailed",
    "ClientRecord",
    "HawkRequest",
    "InsufficientScopes",
    "RoleCycleError",
    "RoleError",
    "RoleResolver",
    "ScopeExpr",
    "ScopeExpressionError",
    "ScopeSet",
    "anonymous",
    "authenticate",
    "check_no_cycle",
    "client_ids_needed",
    "create_temporary_credentials",
    "expand_template",
    "is_valid_scope",
    "missing",
    "normalize_scopes",
    "request_port",
    "satisfies",
    "split_host_header",
    "validate_roles",
]
