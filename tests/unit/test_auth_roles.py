"""Role expansion, star roles, parameters, cycle checks; checked against a naive fixed point."""

from __future__ import annotations

import pytest
from hypothesis import assume as hypothesis_assume
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.auth.roles import (
    InvalidRoleScopeError,
    RoleCycleError,
    RoleResolver,
    check_no_cycle,
    validate_roles,
)
from shared.auth.scopes import normalize_scopes

ROLES = {
    "anonymous": ["queue:ping"],
    "group:admins": ["admin-scope-1", "admin-scope-2", "assume:group:devs"],
    "group:devs": ["dev-scope"],
    "repo:github.com/*": ["secrets:get:repo:<..>", "assume:project:<..>:ci", "plain-repo"],
    "project:*": ["queue:route:index.<..>.*"],
    "hook-id:taskcluster/*": ["queue:create-task:highest:prov/hooks"],
    "worker-pool:prov/*": ["queue:claim-work:prov/<..>", "queue:worker-id:<..>/*"],
}


@pytest.fixture
def resolver() -> RoleResolver:
    validate_roles(ROLES)
    return RoleResolver(ROLES)


def test_plain_recursive_expansion(resolver: RoleResolver) -> None:
    assert resolver.expand(["assume:group:admins", "my-scope"]) == (
        "admin-scope-1",
        "admin-scope-2",
        "assume:group:admins",
        "assume:group:devs",
        "dev-scope",
        "my-scope",
    )


def test_scopes_without_roles_pass_through_normalised(resolver: RoleResolver) -> None:
    assert resolver.expand(["d", "c*", "cd", "c"]) == ("c*", "d")
    assert resolver.expand([]) == ()
    assert resolver.expand(["assume:nobody"]) == ("assume:nobody",)


def test_star_role_substitutes_the_matched_suffix(resolver: RoleResolver) -> None:
    assert resolver.expand(["assume:repo:github.com/org/app"]) == (
        "assume:project:org/app:ci",
        "assume:repo:github.com/org/app",
        "plain-repo",
        "queue:route:index.org/app:ci.*",
        "secrets:get:repo:org/app",
    )
    # The star role also applies to its bare prefix, with an empty parameter.
    assert "secrets:get:repo:" in resolver.expand(["assume:repo:github.com/"])


def test_star_assume_grants_with_a_star_parameter_and_drops_the_rest(
    resolver: RoleResolver,
) -> None:
    # assume:repo:github.com/org/* covers every repo of org: <..> becomes `org/*` and
    # whatever followed <..> is cut, so `assume:project:org/*` (not `...:ci`).
    expanded = resolver.expand(["assume:repo:github.com/org/*"])
    assert "secrets:get:repo:org/*" in expanded
    assert "assume:project:org/*" in expanded
    assert "queue:route:index.org/*" in expanded
    assert "plain-repo" in expanded


def test_star_assume_shorter_than_the_role_prefix(resolver: RoleResolver) -> None:
    expanded = resolver.expand(["assume:repo:*"])
    assert {"secrets:get:repo:*", "assume:project:*", "queue:route:index.*"} <= set(expanded)
    assert "dev-scope" not in expanded


def test_star_assume_grants_exact_roles_it_prefixes(resolver: RoleResolver) -> None:
    expanded = resolver.expand(["assume:group:*"])
    assert {"admin-scope-1", "admin-scope-2", "dev-scope"} <= set(expanded)


@pytest.mark.parametrize("scope", ["*", "a*", "as*", "assum*", "assume*", "assume:*"])
def test_bare_stars_that_cover_assume_grant_every_role(resolver: RoleResolver, scope: str) -> None:
    expanded = resolver.expand_set([scope, "extra"])
    if scope == "*":
        assert expanded.scopes == ("*",)  # everything is covered by `*` itself
    for granted in ["dev-scope", "admin-scope-1", "queue:ping", "plain-repo", "extra"]:
        assert expanded.satisfies_scope(granted)
    assert expanded.satisfies_scope("secrets:get:repo:*")
    assert expanded.satisfies_scope("secrets:get:other") is (scope == "*")


@pytest.mark.parametrize("scope", ["b*", "assumex*", "assume", "assume:", "assume:group:admin"])
def test_scopes_that_do_not_cover_a_role_grant_nothing(resolver: RoleResolver, scope: str) -> None:
    assert resolver.expand([scope]) == (scope,)


def test_exact_and_star_roles_both_apply() -> None:
    roles = {"a:b": ["exact"], "a:*": ["star:<..>"], "*": ["root:<..>"]}
    validate_roles(roles)
    assert RoleResolver(roles).expand(["assume:a:b"]) == (
        "assume:a:b",
        "exact",
        "root:a:b",
        "star:b",
    )


def test_expansion_is_cached_and_idempotent(resolver: RoleResolver) -> None:
    first = resolver.expand_set(["assume:group:admins"])
    assert resolver.expand_set(["assume:group:admins"]) is first
    assert resolver.expand(first.scopes) == first.scopes


@pytest.mark.parametrize("cache_size", [0, 1])
def test_tiny_or_no_cache_still_gives_right_answers(cache_size: int) -> None:
    resolver = RoleResolver(ROLES, cache_size=cache_size)
    for _ in range(3):
        assert "dev-scope" in resolver.expand(["assume:group:admins"])
        assert "queue:ping" in resolver.expand(["assume:anonymous"])


def test_exact_cycles_still_terminate_in_the_resolver() -> None:
    # Forbidden at createRole, but a resolver fed such roles must not loop.
    roles = {"a": ["assume:b", "sa"], "b": ["assume:a", "sb"]}
    with pytest.raises(RoleCycleError):
        validate_roles(roles)
    assert RoleResolver(roles).expand(["assume:a"]) == ("assume:a", "assume:b", "sa", "sb")


def test_divergent_parameterised_roles_stop_with_an_error() -> None:
    roles = {"a*": ["assume:a<..>x"]}
    with pytest.raises(RoleCycleError):
        RoleResolver(roles).expand(["assume:a1"])
    # With the star form everything is covered at once, so it converges.
    assert RoleResolver(roles).expand(["assume:a*"]) == ("assume:a*",)


@pytest.mark.parametrize(
    ("roles", "cycle_hint"),
    [
        ({"a": ["assume:b"], "b": ["assume:a"]}, "'assume:a' -> 'assume:b' -> 'assume:a'"),
        ({"a": ["assume:a"]}, "'assume:a' -> 'assume:a'"),
        ({"admin": ["*"]}, "'assume:admin' -> 'assume:admin'"),
        ({"x": ["assume:y*"], "y:z": ["assume:x"]}, "'assume:x' -> 'assume:y:z' -> 'assume:x'"),
        ({"p*": ["assume:q<..>"], "q1": ["assume:p1"]}, "'assume:p*' -> 'assume:q1'"),
    ],
)
def test_cycles_are_refused(roles: dict[str, list[str]], cycle_hint: str) -> None:
    with pytest.raises(RoleCycleError) as info:
        validate_roles(roles)
    assert "Roles may not contain dependency cycles" in str(info.value)
    assert cycle_hint in str(info.value)


def test_check_no_cycle_for_a_new_role() -> None:
    existing = {"a": ["assume:b"], "c": ["x"]}
    check_no_cycle(existing, "b", ["assume:c", "y"])
    with pytest.raises(RoleCycleError):
        check_no_cycle(existing, "b", ["assume:a"])
    with pytest.raises(RoleCycleError):
        check_no_cycle(existing, "b", ["assume:*"])  # b would assume a, which assumes b


@pytest.mark.parametrize(
    "scopes", [["x:<..>:<..>"], ["x*<..>"], ["bad\nscope"], ["assume:ok", "tab\t"]]
)
def test_invalid_role_scopes_are_refused(scopes: list[str]) -> None:
    with pytest.raises(InvalidRoleScopeError):
        check_no_cycle({}, "role*", scopes)


def test_parameters_are_literal_in_roles_without_a_star() -> None:
    roles = {"plain": ["x:<..>:<..>"]}
    validate_roles(roles)
    assert RoleResolver(roles).expand(["assume:plain"]) == ("assume:plain", "x:<..>:<..>")


def test_long_acyclic_chains_expand_fully() -> None:
    roles = {f"r{i}": [f"assume:r{i + 1}", f"s{i}"] for i in range(400)}
    validate_roles(roles)  # iterative: no recursion limit
    expanded = RoleResolver(roles).expand(["assume:r0"])
    assert "s399" in expanded and "assume:r400" in expanded


# --- property: agreement with a naive fixed point written from the definition -----------


def naive_grants(held: str, roles: dict[str, list[str]]) -> set[str]:
    """Scopes granted directly by holding `held`, straight from the definitions."""
    granted: set[str] = set()
    held_is_star = held.endswith("*")
    held_prefix = held[:-1] if held_is_star else held
    for role_id, scopes in roles.items():
        if not role_id.endswith("*"):
            if held == f"assume:{role_id}" or (
                held_is_star and f"assume:{role_id}".startswith(held_prefix)
            ):
                granted.update(scopes)
            continue
        pattern = "assume:" + role_id[:-1]  # the role applies to every `pattern + suffix`
        if not held_is_star:
            param = held[len(pattern) :] if held.startswith(pattern) else None
        elif held_prefix.startswith(pattern):
            param = held_prefix[len(pattern) :] + "*"  # the suffixes all start with this
        elif pattern.startswith(held_prefix):
            param = "*"  # every suffix
        else:
            param = None
        if param is None:
            continue
        for scope in scopes:
            if "<..>" not in scope:
                granted.add(scope)
            elif param.endswith("*"):
                granted.add(scope[: scope.index("<..>")] + param)
            else:
                granted.add(scope.replace("<..>", param, 1))
    return granted


class TooBig(Exception):
    """The naive fixed point grew too large to be worth finishing."""


def naive_expand(
    scopes: list[str], roles: dict[str, list[str]], limit: int = 25
) -> list[str] | None:
    """Fixed point over normalised sets; None if it does not converge within `limit` rounds."""
    current = normalize_scopes(scopes)
    for _ in range(limit):
        following = set(current)
        for held in current:
            following |= naive_grants(held, roles)
        following_normal = normalize_scopes(following)
        if following_normal == current:
            return current
        if len(following_normal) > 2000:
            raise TooBig
        current = following_normal
    return None


rarely = st.sampled_from([False, False, False, True])
# Small pools make roles refer to each other often enough to build real chains.
role_ids = st.sampled_from(["a", "b", "aa", "ab", "ba", "bb", "a*", "b*", "ab*", "ba*", "*"])
assume_scopes = st.builds(
    lambda base, suffix, star: "assume:" + base + suffix + ("*" if star else ""),
    st.sampled_from(["a", "b", "aa", "ab", "ba", "bb"]),
    st.text("ab", max_size=1),
    rarely,
)
parameterised = st.builds(
    lambda s, t: "assume:" + s + "<..>" + t, st.text("ab", max_size=2), st.text("ab", max_size=1)
)
role_scopes = st.one_of(
    assume_scopes,
    assume_scopes,
    parameterised,
    st.builds(lambda s: "x:" + s + "<..>", st.text("ab", max_size=2)),
    st.text("ab:", min_size=1, max_size=3),
    st.sampled_from(["a*", "assum*", "x:*", "assume:*"]),
)
role_sets = st.dictionaries(role_ids, st.lists(role_scopes, min_size=1, max_size=3), max_size=5)
inputs = st.lists(
    st.one_of(
        role_scopes, st.sampled_from(["*", "assume:*", "assume:a", "assume:ab", "assume:b*"])
    ),
    max_size=3,
)


def assuming_some_role(roles: dict[str, list[str]]) -> st.SearchStrategy[list[str]]:
    """Inputs that mostly hit the generated roles (exactly, through a star, or by prefix)."""
    if not roles:
        return inputs

    def hit(role_id: str, suffix: str, star: bool) -> str:
        if role_id.endswith("*"):
            role_id = role_id[:-1] + suffix
        return "assume:" + role_id + ("*" if star else "")

    hits = st.builds(hit, st.sampled_from(sorted(roles)), st.text("ab", max_size=2), rarely)
    return st.lists(st.one_of(hits, hits, role_scopes), min_size=1, max_size=3)


roles_and_inputs = role_sets.flatmap(
    lambda roles: st.tuples(st.just(roles), assuming_some_role(roles))
)


@settings(max_examples=700, deadline=None)
@given(roles_and_inputs)
def test_expansion_agrees_with_naive_fixed_point(
    case: tuple[dict[str, list[str]], list[str]],
) -> None:
    roles, scopes = case
    try:
        expected = naive_expand(scopes, roles)
    except TooBig:
        hypothesis_assume(False)
        return
    try:
        validate_roles(roles)
        acyclic = True
    except RoleCycleError:
        acyclic = False
    except InvalidRoleScopeError:
        hypothesis_assume(False)
        return
    resolver = RoleResolver(roles)
    if acyclic:
        assert expected is not None, "acyclic roles always converge"
        assert list(resolver.expand(scopes)) == expected
        return
    # Cyclic sets are refused upstream; ours must still stop: same answer, or an error
    # (always an error when the naive fixed point never converges).
    try:
        got = list(resolver.expand(scopes))
    except RoleCycleError:
        return
    assert expected is not None and got == expected


@settings(max_examples=200, deadline=None)
@given(role_sets, inputs, inputs)
def test_expansion_is_monotone_and_idempotent(
    roles: dict[str, list[str]], first: list[str], second: list[str]
) -> None:
    try:
        validate_roles(roles)
    except (RoleCycleError, InvalidRoleScopeError):
        hypothesis_assume(False)
        return
    resolver = RoleResolver(roles)
    small = resolver.expand_set(first)
    big = resolver.expand_set(first + second)
    assert resolver.expand(small.scopes) == small.scopes
    assert all(big.satisfies_scope(s) for s in small.scopes)
