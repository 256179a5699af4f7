"""Scope validity, satisfaction, expressions, templates and normalisation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from taskcluster.utils import scopeMatch

from shared.auth.scopes import (
    ScopeExpressionError,
    ScopeSet,
    expand_template,
    is_valid_scope,
    missing,
    normalize_scopes,
    satisfies,
    scope_satisfies,
)

# --- validity -----------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["", "a", "queue:create-task:high:prov/wt", " ~", "a*b*", "*"])
def test_printable_ascii_scopes_are_valid(scope: str) -> None:
    assert is_valid_scope(scope)


@pytest.mark.parametrize("scope", ["tab\there", "new\nline", "caf\u00e9", "\x7f", None, 3, ["a"]])
def test_non_printable_or_non_string_scopes_are_invalid(scope: object) -> None:
    assert not is_valid_scope(scope)


# --- satisfaction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "required", "expected"),
    [
        ("a", "a", True),
        ("a", "ab", False),
        ("a*", "a", True),
        ("a*", "abc", True),
        ("a*", "a*", True),
        ("a*", "b", False),
        ("*", "", True),
        ("*", "anything", True),
        ("a*b", "a*b", True),  # a star in the middle is a literal
        ("a*b", "axb", False),
        ("a**", "a*", True),
        ("a**", "ab", False),
        ("", "", True),
        ("", "a", False),
    ],
)
def test_single_scope_rule(held: str, required: str, expected: bool) -> None:
    assert scope_satisfies(held, required) is expected
    assert ScopeSet([held]).satisfies_scope(required) is expected


def test_expressions() -> None:
    held = ScopeSet(["queue:get-task:*", "queue:status:abc", "assume:x"])
    assert held.satisfies("queue:get-task:abc")
    assert held.satisfies({"AllOf": []})
    assert not held.satisfies({"AnyOf": []})
    assert held.satisfies({"AllOf": ["queue:get-task:1", "queue:status:abc"]})
    assert not held.satisfies({"AllOf": ["queue:get-task:1", "queue:status:def"]})
    assert held.satisfies({"AnyOf": ["nope", {"AllOf": ["assume:x", "queue:status:abc"]}]})
    assert not held.satisfies({"AnyOf": ["nope", {"AllOf": ["assume:x", "nope2"]}]})


def test_functional_forms_accept_plain_iterables() -> None:
    assert satisfies(["a*"], {"AllOf": ["ab", "ac"]})
    assert missing(["a*"], {"AllOf": ["ab", "b"]}) == "b"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("have", None),
        ("lack", "lack"),
        ({"AllOf": []}, None),
        ({"AnyOf": []}, {"AnyOf": []}),
        ({"AllOf": ["have", "lack"]}, "lack"),
        ({"AllOf": ["lack", "lack2", "have"]}, {"AllOf": ["lack", "lack2"]}),
        ({"AnyOf": ["lack", "have"]}, None),
        ({"AnyOf": ["lack", "lack2"]}, {"AnyOf": ["lack", "lack2"]}),
        ({"AnyOf": ["lack"]}, "lack"),
        (
            {"AllOf": ["have", {"AnyOf": ["lack", {"AllOf": ["have", "lack2"]}]}]},
            {"AnyOf": ["lack", "lack2"]},
        ),
    ],
)
def test_missing_removes_satisfied_parts(expr: Any, expected: Any) -> None:
    assert ScopeSet(["have"]).missing(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        {"AllOf": "a"},
        {"AllOf": [], "AnyOf": []},
        {"OneOf": ["a"]},
        {"AllOf": [3]},
        ["a"],
        None,
    ],
)
def test_malformed_expressions_are_rejected(expr: Any) -> None:
    with pytest.raises(ScopeExpressionError):
        ScopeSet(["*"]).satisfies(expr)


def test_scope_set_behaves_like_a_value() -> None:
    a, b = ScopeSet(["x", "y*", "yz"]), ScopeSet(["y*", "x", "x"])
    assert a == b and hash(a) == hash(b)
    assert list(a) == ["x", "y*"] and len(a) == 2 and "x" in a and "yz" not in a


# --- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        ([], []),
        (["b", "a", "b"], ["a", "b"]),
        (["a*", "a", "ab", "ab*", "b"], ["a*", "b"]),
        (["a**", "a*"], ["a*"]),  # a* is strictly stronger than a**
        (["a**", "ab"], ["a**", "ab"]),
        (["*", "anything", "x*"], ["*"]),
        (["a*b", "a*bc"], ["a*b", "a*bc"]),
        (["q:1", "q:*", "q"], ["q", "q:*"]),
    ],
)
def test_normalize(scopes: list[str], expected: list[str]) -> None:
    assert normalize_scopes(scopes) == expected


# --- templates ----------------------------------------------------------------------------


def test_template_substitution() -> None:
    template = {"AllOf": ["queue:resolve-task:<taskId>/<runId>", "queue:x"]}
    assert expand_template(template, {"taskId": "T", "runId": 0}) == {
        "AllOf": ["queue:resolve-task:T/0", "queue:x"]
    }


def test_template_for_each_expands_in_place() -> None:
    template = {
        "AllOf": [
            "queue:create-task:project:<projectId>",
            {"for": "r", "in": "routes", "each": "queue:route:<r>"},
            {"AnyOf": [{"for": "s", "in": "scopes", "each": "<s>"}, "x"]},
        ]
    }
    params = {"projectId": "none", "routes": ["a.b", "c"], "scopes": ["s1"]}
    assert expand_template(template, params) == {
        "AllOf": [
            "queue:create-task:project:none",
            "queue:route:a.b",
            "queue:route:c",
            {"AnyOf": ["s1", "x"]},
        ]
    }
    assert expand_template(
        {"AllOf": [{"for": "r", "in": "routes", "each": "r:<r>"}]}, {"routes": []}
    ) == {"AllOf": []}


@pytest.mark.parametrize(
    ("template", "params"),
    [
        ("a:<missing>", {}),
        ("a:<flag>", {"flag": True}),
        ("a:<obj>", {"obj": {"x": 1}}),
        ({"AllOf": [{"for": "r", "in": "routes", "each": "<r>"}]}, {"routes": "notalist"}),
        ({"AllOf": [{"for": "r", "in": "routes"}]}, {"routes": []}),
        ({"for": "r", "in": "routes", "each": "<r>"}, {"routes": []}),
        ({"AllOf": "x"}, {}),
        (3, {}),
    ],
)
def test_template_errors(template: Any, params: dict[str, Any]) -> None:
    with pytest.raises(ScopeExpressionError):
        expand_template(template, params)


# --- properties against brute force -------------------------------------------------------

small_scopes = st.text(alphabet="ab:*", max_size=4)
held_sets = st.lists(small_scopes, max_size=6)
expressions = st.recursive(
    small_scopes,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"AllOf": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda xs: {"AnyOf": xs}, st.lists(inner, max_size=3)),
    ),
    max_leaves=8,
)


def brute_satisfies(held: list[str], required: str) -> bool:
    return any(p == required or (p.endswith("*") and required.startswith(p[:-1])) for p in held)


def brute_expression(held: list[str], expr: Any) -> bool:
    if isinstance(expr, str):
        return brute_satisfies(held, expr)
    if "AllOf" in expr:
        return all(brute_expression(held, e) for e in expr["AllOf"])
    return any(brute_expression(held, e) for e in expr["AnyOf"])


@settings(max_examples=400, deadline=None)
@given(held_sets, small_scopes)
def test_satisfies_agrees_with_brute_force_and_the_official_client(held: list[str], s: str) -> None:
    expected = brute_satisfies(held, s)
    assert satisfies(held, s) is expected
    assert scopeMatch(held, [[s]]) is expected


@settings(max_examples=400, deadline=None)
@given(held_sets, expressions)
def test_expressions_agree_with_brute_force(held: list[str], expr: Any) -> None:
    result = satisfies(held, expr)
    assert result is brute_expression(held, expr)
    # missing() is None exactly when satisfied, and what it returns is never satisfied.
    remainder = missing(held, expr)
    assert (remainder is None) is result
    if remainder is not None:
        assert not brute_expression(held, remainder)


@settings(max_examples=400, deadline=None)
@given(held_sets, st.lists(small_scopes, min_size=1, max_size=8))
def test_normalisation_preserves_satisfaction_and_is_idempotent(
    held: list[str], probes: list[str]
) -> None:
    normal = normalize_scopes(held)
    assert normalize_scopes(normal) == normal
    assert normal == sorted(set(normal))
    for probe in [*probes, *held]:
        assert brute_satisfies(normal, probe) is brute_satisfies(held, probe)
    # Nothing kept is redundant: dropping any kept scope loses something it satisfied.
    for i, kept in enumerate(normal):
        others = normal[:i] + normal[i + 1 :]
        if kept.endswith("*"):
            covered = any(p.endswith("*") and kept[:-1].startswith(p[:-1]) for p in others)
        else:
            covered = brute_satisfies(others, kept)
        assert not covered
