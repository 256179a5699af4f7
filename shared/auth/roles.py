"""Role expansion (reference 7.3): `assume:<roleId>` grants the role's scopes, recursively.

- A role whose id ends in `*` applies to every assumed id with that prefix; `<..>` in
  its scopes becomes the suffix that matched the `*`.
- A held scope ending in `*` that covers `assume:X` for many X (`assume:repo:*`, and
  also `*`, `a*`, ... `assume*`) grants every role it could assume. Through a star role
  the `<..>` is then replaced by `<matched part>*` and the rest of the scope dropped,
  which covers every concrete suffix at once (upstream's "kleene" rule).
- Roles must not form dependency cycles; `validate_roles`/`check_no_cycle` enforce it
  the way upstream's createRole does, and the resolver still stops (with
  RoleCycleError) if handed a cyclic set that would never converge.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from shared.auth.scopes import ScopeSet, is_valid_scope, normalize_scopes

ASSUME = "assume:"
PARAM = "<..>"
K = TypeVar("K")
V = TypeVar("V")


class RoleError(ValueError):
    """A role set that cannot be accepted (createRole answers 400)."""


class InvalidRoleScopeError(RoleError):
    pass


class RoleCycleError(RoleError):
    def __init__(self, message: str, cycle: list[str] | None = None) -> None:
        super().__init__(message)
        self.cycle = cycle or []


def assume_target(scope: str) -> tuple[str, bool] | None:
    """What a held scope can assume: (role id, False) or (role-id prefix, True); else None."""
    if scope.startswith(ASSUME):
        rest = scope[len(ASSUME) :]
        if rest.endswith("*"):
            return rest[:-1], True
        return rest, False
    # `*`, `a*`, ... `assume*` satisfy `assume:<anything>`, so they assume every role.
    if scope.endswith("*") and ASSUME.startswith(scope[:-1]):
        return "", True
    return None


def with_param(template: str, param: str) -> str:
    """Replace the first `<..>`; a star parameter also swallows the rest of the scope."""
    i = template.find(PARAM)
    if i < 0:
        return template
    if param.endswith("*"):
        return template[:i] + param
    return template[:i] + param + template[i + len(PARAM) :]


class _RoleIndex:
    """Role lookups by exact id, by star prefix, and by "every id starting with"."""

    def __init__(self, roles: Mapping[str, Iterable[str]]) -> None:
        self.exact: dict[str, tuple[str, ...]] = {}
        # star prefix -> (plain scopes, scopes containing <..>)
        self.star: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        for role_id, scopes in roles.items():
            scopes = tuple(scopes)
            if role_id.endswith("*"):
                plain = tuple(normalize_scopes(s for s in scopes if PARAM not in s))
                templates = tuple(sorted({s for s in scopes if PARAM in s}))
                self.star[role_id[:-1]] = (plain, templates)
            else:
                # `<..>` means nothing in a role without a star: it is literal text.
                self.exact[role_id] = tuple(normalize_scopes(scopes))
        self.exact_sorted = sorted(self.exact)
        self.star_sorted = sorted(self.star)
        self.star_lengths = tuple(sorted({len(p) for p in self.star}))

    def matches(self, target: str, is_star: bool) -> Iterator[tuple[str, str | None]]:
        """(role key, parameter) for every role the target assumes.

        The key is the exact role id, or the star prefix for star roles (whose parameter
        is never None).
        """
        if not is_star:
            if target in self.exact:
                yield target, None
            for n in self.star_lengths:
                if n > len(target):
                    break
                if target[:n] in self.star:
                    yield target[:n] + "*", target[n:]
            return
        yield from ((role_id, None) for role_id in _with_prefix(self.exact_sorted, target))
        # Star roles whose prefix extends the target: every suffix is reachable.
        yield from ((p + "*", "*") for p in _with_prefix(self.star_sorted, target))
        # Star roles whose prefix is a proper prefix of the target.
        for n in self.star_lengths:
            if n >= len(target):
                break
            if target[:n] in self.star:
                yield target[:n] + "*", target[n:] + "*"

    def scopes_of(self, key: str, param: str | None) -> Iterable[str]:
        if param is None:
            return self.exact[key]
        plain, templates = self.star[key[:-1]]
        if not templates:
            return plain
        return (*plain, *(with_param(t, param) for t in templates))

    def grants(self, scope: str) -> Iterator[str]:
        """Scopes granted directly (one level) by holding `scope`."""
        target = assume_target(scope)
        if target is None:
            return
        for key, param in self.matches(*target):
            yield from self.scopes_of(key, param)


def _with_prefix(sorted_ids: list[str], prefix: str) -> Iterator[str]:
    # Strings sharing a prefix are contiguous in sorted order.
    i = bisect_left(sorted_ids, prefix)
    while i < len(sorted_ids) and sorted_ids[i].startswith(prefix):
        yield sorted_ids[i]
        i += 1


class RoleResolver:
    """Expands scope sets through a fixed role set. Build a new one when roles change.

    Lookups are indexed once here; the closure of each assume-scope and the expansion
    of each distinct input set are cached (bounded), so a repeat caller costs one
    dict lookup.
    """

    def __init__(self, roles: Mapping[str, Iterable[str]], *, cache_size: int = 10_000) -> None:
        self._roles = {role_id: tuple(scopes) for role_id, scopes in roles.items()}
        self._index = _RoleIndex(self._roles)
        # In an acyclic role set every chain of role applications visits each role at
        # most once, so the breadth-first closure is at most this deep.
        self._max_depth = len(self._roles) + 1
        self._cache_size = cache_size
        self._closures: dict[str, frozenset[str]] = {}
        self._sets: dict[frozenset[str], ScopeSet] = {}

    @property
    def roles(self) -> Mapping[str, tuple[str, ...]]:
        return self._roles

    def expand(self, scopes: Iterable[str]) -> tuple[str, ...]:
        """The normalised expansion of `scopes` (inputs included)."""
        return self.expand_set(scopes).scopes

    def expand_set(self, scopes: Iterable[str]) -> ScopeSet:
        key = frozenset(scopes)
        hit = self._sets.get(key)
        if hit is not None:
            return hit
        if "*" in key:
            # `*` covers every scope any role could grant: skip expanding all roles.
            return _bounded_put(self._sets, key, ScopeSet(["*"]), self._cache_size)
        result: set[str] = set(key)
        for scope in key:
            if assume_target(scope) is not None:
                result |= self._closure(scope)
        return _bounded_put(self._sets, key, ScopeSet(result), self._cache_size)

    def _closure(self, scope: str) -> frozenset[str]:
        """Everything `scope` leads to, breadth first, skipping already-covered scopes."""
        hit = self._closures.get(scope)
        if hit is not None:
            return hit
        result = {scope}
        covering = _StarCover()
        covering.add(scope)
        frontier = [scope]
        depth = 0
        while frontier:
            depth += 1
            if depth > self._max_depth:
                raise RoleCycleError(
                    f"expanding {scope!r} does not converge: the roles contain a cycle"
                )
            next_frontier = []
            for current in frontier:
                for granted in self._index.grants(current):
                    # A scope covered by a star we already hold grants nothing new:
                    # the star's own grants cover it.
                    if granted in result or covering.covers(granted):
                        continue
                    cached = self._closures.get(granted)
                    if cached is not None:
                        result |= cached
                        for s in cached:
                            covering.add(s)
                        continue
                    result.add(granted)
                    covering.add(granted)
                    if assume_target(granted) is not None:
                        next_frontier.append(granted)
            frontier = next_frontier
        return _bounded_put(self._closures, scope, frozenset(result), self._cache_size)


class _StarCover:
    """Incrementally answers "is this scope strictly covered by a held star scope?"."""

    __slots__ = ("prefixes", "lengths")

    def __init__(self) -> None:
        self.prefixes: set[str] = set()
        self.lengths: list[int] = []

    def add(self, scope: str) -> None:
        if scope.endswith("*"):
            prefix = scope[:-1]
            if prefix not in self.prefixes:
                self.prefixes.add(prefix)
                if len(prefix) not in self.lengths:
                    self.lengths.append(len(prefix))

    def covers(self, scope: str) -> bool:
        limit = len(scope) - 2 if scope.endswith("*") else len(scope)
        return any(n <= limit and scope[:n] in self.prefixes for n in self.lengths)


def _bounded_put(cache: dict[K, V], key: K, value: V, size: int) -> V:
    # Insertion-ordered dict as a FIFO cache: cheap, and a miss only costs a recompute.
    if size > 0:
        if len(cache) >= size:
            del cache[next(iter(cache))]
        cache[key] = value
    return value


def validate_roles(roles: Mapping[str, Iterable[str]]) -> None:
    """Raise RoleError if any scope is invalid or the roles form a dependency cycle.

    Role R depends on role Q when some scope of R, with `<..>` taken as `*` (the worst
    case), assumes Q. Like upstream, any cycle is refused, including a role that
    reaches itself (for example a role holding `*`).
    """
    materialised = {role_id: tuple(scopes) for role_id, scopes in roles.items()}
    for role_id, scopes in materialised.items():
        _validate_role_scopes(role_id, scopes)
    index = _RoleIndex(materialised)
    edges = {rid: _dependencies(index, rid, scopes) for rid, scopes in materialised.items()}
    _find_cycle(edges)


def check_no_cycle(roles: Mapping[str, Iterable[str]], role_id: str, scopes: Iterable[str]) -> None:
    """For createRole/updateRole: would setting `role_id` to `scopes` be acceptable?"""
    validate_roles({**roles, role_id: tuple(scopes)})


def _validate_role_scopes(role_id: str, scopes: tuple[str, ...]) -> None:
    for scope in scopes:
        if not is_valid_scope(scope):
            raise InvalidRoleScopeError(f"role {role_id!r} has invalid scope {scope!r}")
        if not role_id.endswith("*") or PARAM not in scope:
            continue
        if scope.count(PARAM) > 1:
            raise InvalidRoleScopeError(f"parameterized scope {scope!r} contains multiple '<..>'")
        if scope.endswith("*" + PARAM):
            # With an empty suffix the `*` would silently become a wildcard.
            raise InvalidRoleScopeError(
                f"parameterized scope {scope!r} ends with '*<..>' which implies an ambiguous kleene"
            )


def _dependencies(index: _RoleIndex, role_id: str, scopes: tuple[str, ...]) -> list[str]:
    worst_case = [with_param(s, "*") if role_id.endswith("*") else s for s in scopes]
    found: dict[str, None] = {}
    for scope in worst_case:
        target = assume_target(scope)
        if target is not None:
            for key, _param in index.matches(*target):
                found[key] = None
    return list(found)


def _find_cycle(edges: Mapping[str, list[str]]) -> None:
    # Iterative depth-first search (a long role chain must not hit the recursion limit).
    done: set[str] = set()
    for start in sorted(edges):
        if start in done:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(edges[start]))]
        on_path = {start: 0}
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                del on_path[node]
                done.add(node)
            elif child in on_path:
                path = [n for n, _ in stack[on_path[child] :]] + [child]
                shown = " -> ".join(f"'assume:{n}'" for n in path)
                message = f"Roles may not contain dependency cycles, found: {shown}"
                raise RoleCycleError(message, path)
            elif child not in done:
                on_path[child] = len(stack)
                stack.append((child, iter(edges[child])))
