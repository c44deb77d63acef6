"""Auth without sockets: grants on exact ids and prefixes, token checks, admin token, Origin check."""

from __future__ import annotations

import time

import jwt
import pytest

from hub.core.auth import OPEN, Auth, Grant
from hub.core.errors import HubError

SECRET = "s" * 32


def test_grant_patterns_exact_and_prefix() -> None:
    g = Grant(read=("chat/1/*", "solo"), write=("chat/1/a",))
    assert g.can("read", "chat/1/a") and g.can("read", "chat/1/") and g.can("read", "solo")
    assert not g.can("read", "chat/10/a") and not g.can("read", "chat/1") and not g.can("read", "solo2")
    assert g.can("write", "chat/1/a") and not g.can("write", "chat/1/b")
    assert g.can("cancel", "chat/1/a")  # write implies cancel
    assert not g.can("cancel", "chat/1/b")  # read does not
    assert Grant(cancel=("x/*",)).can("cancel", "x/y") and not Grant(cancel=("x/*",)).can("write", "x/y")


def test_grant_check_raises_forbidden() -> None:
    with pytest.raises(HubError) as e:
        Grant(read=("a",)).check("write", "a")
    assert (e.value.code, e.value.status, e.value.stream) == ("forbidden", 403, "a")


def test_auth_off_grants_everything() -> None:
    a = Auth(None, "adm")
    assert not a.enabled and a.grant(None) is OPEN and OPEN.can("write", "any/thing")
    with pytest.raises(RuntimeError):
        a.mint(read=["x"])


def test_minted_tokens_carry_their_grants() -> None:
    a = Auth(SECRET, "adm", issuer="me")
    g = a.grant(a.mint(read=["chat/*"], write=["chat/1/a"], cancel=["chat/2/*"]))
    assert g == Grant(read=("chat/*",), write=("chat/1/a",), cancel=("chat/2/*",))
    # a single string claim counts as a one-element list; non-strings are ignored
    tok = jwt.encode({"read": "one", "write": [1, "two"], "exp": time.time() + 60, "iss": "me"}, SECRET)
    assert a.grant(tok) == Grant(read=("one",), write=("two",))


@pytest.mark.parametrize(
    "claims, why",
    [
        ({"read": ["x"]}, "no exp"),
        ({"read": ["x"], "exp": 1}, "expired"),
        ({"read": ["x"], "exp": 2**40, "iss": "other"}, "wrong issuer"),
    ],
)
def test_bad_tokens_are_unauthorized(claims: dict[str, object], why: str) -> None:
    a = Auth(SECRET, "adm", issuer="me")
    with pytest.raises(HubError) as e:
        a.grant(jwt.encode(claims, SECRET))
    code = "token_expired" if why == "expired" else "unauthorized"  # a client can tell "get a new one"
    assert (e.value.code, e.value.status) == (code, 401), why


def test_wrong_key_wrong_algorithm_and_missing_token() -> None:
    a = Auth(SECRET, "adm")
    for tok in (
        None,
        "",
        jwt.encode({"exp": 2**40}, "other" * 8),
        jwt.encode({"exp": 2**40}, "", algorithm="none"),
    ):
        with pytest.raises(HubError) as e:
            a.grant(tok)
        assert e.value.code == "unauthorized"


def test_admin_token() -> None:
    a = Auth(None, "adm")
    a.check_admin("adm")
    for bad in (None, "", "adm ", "ADM"):
        with pytest.raises(HubError) as e:
            a.check_admin(bad)
        assert e.value.status == 401


def test_origin_check_default_and_allow_list() -> None:
    a = Auth(None, "adm")
    a.check_origin(None, "h:1")  # not a browser
    for ok in ("http://localhost:3000", "http://127.0.0.1", "https://h:1"):
        a.check_origin(ok, "h:1")
    with pytest.raises(HubError) as e:
        a.check_origin("https://evil.example", "h:1")
    assert (e.value.code, e.value.status) == ("forbidden", 403)
    listed = Auth(None, "adm", origins=["https://app.example/"])
    listed.check_origin("https://app.example", "h:1")
    with pytest.raises(HubError):
        listed.check_origin("http://localhost:3000", "h:1")  # an allow-list replaces the default
    Auth(None, "adm", origins=["*"]).check_origin("https://anything.example", None)
