"""Scopes: validity, satisfaction, expressions, templates and normalisation (reference 7.3).

A held scope `p` satisfies a required scope `s` when `p == s`, or `p` ends in `*` and
`s` starts with `p[:-1]`. A `*` anywhere else is a literal character. Expressions are
a scope string, `{"AllOf": [...]}` or `{"AnyOf": [...]}`; an empty AllOf is satisfied,
an empty AnyOf never is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

# A scope expression as it travels in JSON: a string or a one-key dict of a list.
ScopeExpr: TypeAlias = str | dict[str, list[Any]]

_TEMPLATE_PARAM = re.compile(r"<([^<>]+)>")
_OPERATORS = ("AllOf", "AnyOf")


class ScopeExpressionError(ValueError):
    """A scope expression or template is malformed (a programming or input error)."""


def is_valid_scope(scope: object) -> bool:
    """Printable ASCII only (upstream's `^[\\x20-\\x7e]*$`); the empty string is valid."""
    # For ASCII text, isprintable() is exactly 0x20..0x7e, and far cheaper than a regex.
    return isinstance(scope, str) and scope.isascii() and scope.isprintable()


def scope_satisfies(held: str, required: str) -> bool:
    """The one-scope rule, spelled out; ScopeSet is the fast path for many held scopes."""
    return held == required or (held.endswith("*") and required.startswith(held[:-1]))


def normalize_scopes(scopes: Iterable[str]) -> list[str]:
    """Sorted, without duplicates and without scopes covered by another star scope.

    `a*` covers `a`, `ab` and `ab*`, but `a**` does not cover `a*` (it satisfies only
    what starts with `a*`), so the strongest form is always the one kept. For a
    normalised set plain string order equals upstream's `scopeCompare` order.
    """
    unique = set(scopes)
    prefixes = {s[:-1] for s in unique if s.endswith("*")}
    if not prefixes:
        return sorted(unique)
    lengths = sorted({len(p) for p in prefixes})
    kept = []
    for scope in unique:
        # A star scope must not be dropped for its own prefix, nor for `scope + '*'`:
        # only prefixes strictly shorter than its own prefix cover it.
        limit = len(scope) - 2 if scope.endswith("*") else len(scope)
        if not _has_prefix_in(scope, prefixes, lengths, limit):
            kept.append(scope)
    kept.sort()
    return kept


def _has_prefix_in(scope: str, prefixes: set[str], lengths: Sequence[int], limit: int) -> bool:
    # Checking only the prefix lengths that exist keeps this O(#distinct lengths)
    # instead of O(#star scopes) per lookup.
    for n in lengths:
        if n > limit:
            return False
        if scope[:n] in prefixes:
            return True
    return False


class ScopeSet:
    """A normalised, immutable set of held scopes with fast satisfaction checks.

    Build one per distinct held set (the role resolver caches them) and ask it many
    questions; each required scope costs one set lookup plus one per distinct
    star-prefix length.
    """

    __slots__ = ("scopes", "_exact", "_prefixes", "_lengths", "_hash")

    scopes: tuple[str, ...]

    def __init__(self, scopes: Iterable[str] = ()) -> None:
        normalised = tuple(normalize_scopes(scopes))
        self.scopes = normalised
        self._exact = frozenset(normalised)
        self._prefixes = frozenset(s[:-1] for s in normalised if s.endswith("*"))
        self._lengths = tuple(sorted({len(p) for p in self._prefixes}))
        self._hash = hash(self._exact)

    def __iter__(self) -> Iterator[str]:
        return iter(self.scopes)

    def __len__(self) -> int:
        return len(self.scopes)

    def __contains__(self, scope: object) -> bool:
        return scope in self._exact

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScopeSet) and self._exact == other._exact

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"ScopeSet({list(self.scopes)!r})"

    def satisfies_scope(self, required: str) -> bool:
        if required in self._exact:
            return True
        return _has_prefix_in(required, self._prefixes, self._lengths, len(required))

    def satisfies(self, expr: ScopeExpr) -> bool:
        if isinstance(expr, str):
            return self.satisfies_scope(expr)
        operator, items = _split(expr)
        # Plain loops: this runs for every scope of every certificate and endpoint.
        if operator == "AllOf":
            for item in items:
                if not self.satisfies(item):
                    return False
            return True
        for item in items:
            if self.satisfies(item):
                return True
        return False

    def missing(self, expr: ScopeExpr) -> ScopeExpr | None:
        """`expr` with every satisfied part removed; None when fully satisfied.

        Used for the 403 message: an AllOf keeps its unsatisfied members (a single one
        is unwrapped), an AnyOf is dropped as soon as one member is satisfied.
        """
        if isinstance(expr, str):
            return None if self.satisfies_scope(expr) else expr
        operator, items = _split(expr)
        if operator == "AllOf":
            remaining = [m for m in (self.missing(i) for i in items) if m is not None]
            if not remaining:
                return None
            return remaining[0] if len(remaining) == 1 else {"AllOf": remaining}
        parts = []
        for item in items:
            part = self.missing(item)
            if part is None:
                return None
            parts.append(part)
        return parts[0] if len(parts) == 1 else {"AnyOf": parts}


def _split(expr: object) -> tuple[str, list[Any]]:
    if isinstance(expr, Mapping) and len(expr) == 1:
        (operator, items), *_ = expr.items()
        if operator in _OPERATORS and isinstance(items, list):
            return operator, items
    raise ScopeExpressionError(f"invalid scope expression {expr!r}")


def as_scope_set(held: ScopeSet | Iterable[str]) -> ScopeSet:
    return held if isinstance(held, ScopeSet) else ScopeSet(held)


def satisfies(held: ScopeSet | Iterable[str], expr: ScopeExpr) -> bool:
    return as_scope_set(held).satisfies(expr)


def missing(held: ScopeSet | Iterable[str], expr: ScopeExpr) -> ScopeExpr | None:
    return as_scope_set(held).missing(expr)


def expand_template(template: Any, params: Mapping[str, Any]) -> ScopeExpr:
    """Fill an endpoint's scope template from request parameters.

    Strings have `<name>` replaced by `params[name]` (a str, or an int such as runId).
    Inside AllOf/AnyOf, `{"for": "x", "in": "listParam", "each": <template>}` is
    replaced by one expansion of `each` per element of `params["listParam"]`, with the
    element bound to `x`.
    """
    if isinstance(template, str):
        return _substitute(template, params)
    if isinstance(template, Mapping) and len(template) == 1:
        (operator, items), *_ = template.items()
        if operator in _OPERATORS and isinstance(items, list):
            expanded: list[Any] = []
            for item in items:
                if isinstance(item, Mapping) and "for" in item:
                    expanded.extend(_expand_for(item, params))
                else:
                    expanded.append(expand_template(item, params))
            return {operator: expanded}
    raise ScopeExpressionError(f"invalid scope template {template!r}")


def _expand_for(item: Mapping[str, Any], params: Mapping[str, Any]) -> list[ScopeExpr]:
    if set(item) != {"for", "in", "each"} or not isinstance(item["for"], str):
        raise ScopeExpressionError(f"invalid for-each template {item!r}")
    values = params.get(item["in"])
    if not isinstance(values, list | tuple):
        raise ScopeExpressionError(f"template parameter {item['in']!r} must be a list")
    return [expand_template(item["each"], {**params, item["for"]: v}) for v in values]


def _substitute(template: str, params: Mapping[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = params.get(name)
        # bool is an int subclass; a boolean in a scope is certainly a mistake.
        if isinstance(found, str):
            return found
        if isinstance(found, int) and not isinstance(found, bool):
            return str(found)
        raise ScopeExpressionError(f"template parameter <{name}> missing or not a string")

    return _TEMPLATE_PARAM.sub(value, template)
