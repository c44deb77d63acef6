"""An app server mints stream tokens with the JWT secret alone (README, "Turning auth on")."""

from __future__ import annotations

import pytest

from hub.core.auth import Auth
from hub.core.errors import HubError


def test_mint_needs_no_admin_token_and_such_an_auth_grants_no_admin() -> None:
    minter = Auth("an-app-server-secret-0123456789abcdef")
    token = minter.mint(read=["chat/42/*"], ttl=600)
    grant = Auth("an-app-server-secret-0123456789abcdef", "admin").grant(token)
    assert grant.can("read", "chat/42/a") and not grant.can("write", "chat/42/a")
    with pytest.raises(HubError):
        minter.check_admin("")
    with pytest.raises(HubError):
        minter.check_admin("anything")
