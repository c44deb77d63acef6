"""Hub configuration: flags override environment variables (``RHUB_*``), which override defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"RHUB_{name.upper()}", default)


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path("data")
    store: str | None = None  # redis://host:port/db: the Redis engine, shared by hubs side by side
    fsync: str = "interval"
    fsync_interval_ms: float = 5.0
    admin_token: str | None = None  # bearer token for /admin and /metrics; random when unset
    jwt_secret: str | None = None  # auth is on when set (HS256 by default)
    jwt_algorithm: str = "HS256"
    jwt_issuer: str | None = None
    allowed_origins: list[str] = field(default_factory=list)  # empty: same host, localhost, or no Origin
    max_message_bytes: int = 1 << 20
    max_chunk_bytes: int = 256 << 10
    outbox_bytes: int = 256 << 10  # per-connection send buffer before a subscriber drops to replay
    socket_sndbuf: int = 128 << 10  # kernel send buffer per WebSocket (0 = OS autotuning, up to MBs)
    max_subscriptions: int = 256  # per connection
    max_inflight_appends: int = 1024  # per connection
    max_connections_per_ip: int = 10_000
    heartbeat_s: float = 20.0
    # permessage-deflate on WebSockets: aiohttp's zlib state costs ~100 KiB of RSS per browser tab
    ws_compress: bool = False
    # freeze the survivors of CPython's middle-generation collections (hub/core/gcpolicy.py): full
    # collections then skip the long-lived heap of thousands of connections (a ~0.45 s pause at 10k)
    gc_freeze: bool = True
    stream_ttl_s: float | None = None  # how long closed streams are kept; None = forever
    max_total_bytes: int | None = None  # stored bytes cap: the oldest finished answers go first
    segment_bytes: int = 8 << 20  # raw segments roll (and get sealed) at this size
    archive_delay_s: float | None = 10.0  # a finished answer moves into the archive this long after its close
    demo: bool = False  # serve the demo chat page and the built-in simulated model
    # Answers end: an open stream with no producer for this long ends as error/producer_lost (a hub
    # restart counts as gone); None = never. Durable Streams streams (content-typed) are not leased.
    producer_lease_s: float | None = 30.0
    open_ttl_s: float | None = None  # an open stream ends as error/open_ttl_expired this long after creation
    admin_token_file: Path | None = None  # read the admin token from this file (first line)
    access_log: str = "off"  # off, on (one redacted line per request) or json
    log_level: str = "info"
    aisdk_prefix: str = "/api/chat"  # the AI SDK's endpoints: {prefix}, {prefix}/{chat}/stream, ...
    aisdk_keepalive_s: float = 15.0  # ": keep-alive" comments on an idle AI SDK SSE response
    aisdk_cookie: str | None = None  # a cookie that carries the token for the AI SDK endpoints (off)
    generator: str | None = None  # module:function, an async generator of an answer (hub.producers.generator)
    llm_base_url: str | None = (
        None  # an OpenAI-compatible API: the built-in generator (key: RHUB_LLM_API_KEY)
    )
    llm_model: str | None = None
    ds_long_poll_s: float = 20.0  # Durable Streams: a long-poll with nothing new answers 204 after this
    ds_sse_max_s: float = 60.0  # Durable Streams: an SSE response ends after this (clients resume)
    usage_webhook: str | None = None  # POST one JSON usage record per ended answer here (docs/analytics.md)
    usage_webhook_secret: str | None = None  # signs each POST: X-Rhub-Signature: sha256=<HMAC of the body>

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        cfg = cls()
        for f in fields(cls):
            raw = _env(f.name)
            if raw is None:
                continue
            try:
                setattr(cfg, f.name, _parse(f.type, raw))
            except ValueError as e:
                raise ConfigError(f"RHUB_{f.name.upper()}={raw!r}: {e}") from None
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, None if v is OFF else v)  # a flag's "off" turns an optional setting off
        cfg.data_dir = Path(cfg.data_dir)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Refuse values that parse but mean nothing, naming the setting (flags are checked by argparse)."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"RHUB_{name.upper()}={getattr(self, name)!r}: expected one of {', '.join(allowed)}"
                )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"RHUB_PORT={self.port!r}: expected a port number, 0-65535")


class _Off:
    def __repr__(self) -> str:
        return "off"


OFF = _Off()  # what an optional duration flag gives for ``off`` (``--producer-lease-s off``): unset it


def seconds_or_off(raw: str) -> float | _Off:
    """argparse type of the optional durations: a number of seconds, or ``off``."""
    if raw.strip().lower() in ("off", "none"):
        return OFF
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"expected seconds or off, not {raw!r}") from None


class ConfigError(ValueError):
    """A setting's value is wrong: the message names the setting, for a one-line error at start."""


CHOICES = {
    "fsync": ("always", "interval", "never"),
    "access_log": ("off", "on", "json"),
    "log_level": ("debug", "info", "warning", "error"),
}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _parse(typ: object, raw: str) -> object:
    t = str(typ)
    if t.endswith("| None") and raw.strip().lower() in ("", "none", "off"):
        return None  # an optional setting turned off: RHUB_PRODUCER_LEASE_S=off
    if t.startswith("int"):
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
    if t.startswith("float"):
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    if t.startswith("bool"):
        if raw.strip().lower() not in TRUE + FALSE:
            raise ValueError(f"expected one of {', '.join(TRUE + FALSE[:-1])}")
        return raw.strip().lower() in TRUE
    if t.startswith("list"):
        return [x.strip() for x in raw.split(",") if x.strip()]
    if t.startswith("Path"):
        return Path(raw)
    return raw
