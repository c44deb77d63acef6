"""Who may do what: JWT grants on stream ids or prefixes, an admin token, and the Origin check.

A token's claims: ``read`` and ``write`` are lists of stream-id patterns, each an exact id or a
prefix ending in ``*`` (``"chat/42/*"``); ``cancel`` likewise (``write`` implies cancel). With no
``jwt_secret`` configured, auth is off and every request may read and write (local development).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt
from aiohttp import web

from hub.core.errors import HubError


@dataclass(frozen=True)
class Grant:
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    cancel: tuple[str, ...] = ()
    # the token's exp: a long-lived WebSocket is held to it on every write (not part of what it grants)
    expires: float | None = field(default=None, compare=False)

    def can(self, action: str, stream_id: str) -> bool:
        if action == "read":
            pats = self.read
        elif action == "write":
            pats = self.write
        elif action == "cancel":
            pats = self.cancel + self.write
        else:
            raise KeyError(action)
        for p in pats:  # noqa: SIM110 - a loop, not any(genexpr): checked on every append
            if p == stream_id or (p[-1:] == "*" and stream_id.startswith(p[:-1])):
                return True
        return False

    def check(self, action: str, stream_id: str) -> None:
        if action != "read" and self.expires is not None and time.time() >= self.expires:
            # reads already granted keep flowing on an open connection; a write needs a live token
            raise HubError("token_expired", "the token has expired: reconnect with a new one", stream_id)
        if not self.can(action, stream_id):
            raise HubError("forbidden", f"token does not grant {action} on {stream_id!r}", stream_id)


OPEN = Grant(read=("*",), write=("*",), cancel=("*",))


def bearer(request: web.Request) -> str | None:
    """The request's token: ``Authorization: Bearer``, or ``?token=`` (browsers' WebSocket and
    EventSource cannot set headers)."""
    h = request.headers.get("Authorization", "")
    if h.lower().startswith("bearer "):
        return h[7:].strip()
    return request.query.get("token")


class Auth:
    def __init__(
        self,
        secret: str | None,
        admin_token: str | None = None,  # None: this Auth only mints and checks stream tokens
        algorithm: str = "HS256",
        issuer: str | None = None,
        origins: list[str] | None = None,
    ) -> None:
        self.secret = secret
        self.admin_token = admin_token
        self.algorithm = algorithm
        self.issuer = issuer
        self.origins = [o.rstrip("/") for o in origins or []]

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    def grant(self, token: str | None) -> Grant:
        if not self.enabled:
            return OPEN
        if not token:
            raise HubError("unauthorized", "a bearer token is required")
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                options={"require": ["exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise HubError("token_expired", "the token has expired: get a new one") from None
        except jwt.PyJWTError as e:
            raise HubError("unauthorized", f"invalid token: {e}") from None

        def pats(name: str) -> tuple[str, ...]:
            v = claims.get(name, [])
            return tuple(x for x in ([v] if isinstance(v, str) else v) if isinstance(x, str))

        exp = claims.get("exp")
        return Grant(pats("read"), pats("write"), pats("cancel"), float(exp) if exp is not None else None)

    def mint(self, read: list[str] = (), write: list[str] = (), ttl: float = 3600, **extra: object) -> str:  # type: ignore[assignment]
        """Sign a token (for tests, tools and an app server that hands tokens to browsers)."""
        if self.secret is None:
            raise RuntimeError("auth is off: no jwt secret configured")
        claims: dict[str, object] = {"read": list(read), "write": list(write), "exp": int(time.time() + ttl)}
        if self.issuer:
            claims["iss"] = self.issuer
        claims.update(extra)
        return jwt.encode(claims, self.secret, algorithm=self.algorithm)

    def check_admin(self, token: str | None) -> None:
        if (
            not token
            or not self.admin_token
            or not hmac.compare_digest(token.encode(), self.admin_token.encode())
        ):
            raise HubError("unauthorized", "admin endpoints need the admin bearer token")

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """The one allow-list for browser origins, for WebSocket upgrades and CORS alike: the hub's
        own origin (the Origin's host:port is the Host it was reached by) always; then
        ``allowed_origins`` if set (``*`` = any), else localhost on any port."""
        o = urlsplit(origin)
        if host and o.netloc == host:
            return True
        if self.origins:
            return origin.rstrip("/") in self.origins or "*" in self.origins
        return o.hostname in ("localhost", "127.0.0.1", "::1")

    def check_origin(self, origin: str | None, host: str | None) -> None:
        """Refuse cross-site WebSocket hijacking and cross-site requests: browsers always send
        Origin on upgrades and on every request a page on another site can make that changes state."""
        if origin is None or self.origin_allowed(origin, host):
            return  # no Origin: not a browser (curl, a server, the Python client)
        raise HubError("forbidden", f"origin {origin!r} is not allowed")
