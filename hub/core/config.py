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
    stream_ttl_s: float | None = None  # how long closed streams are kept; None = forever
    max_total_bytes: int | None = None  # stored bytes cap: the oldest finished answers go first
    segment_bytes: int = 8 << 20  # raw segments roll (and get sealed) at this size
    demo: bool = False  # serve the demo chat page and the built-in simulated model

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        cfg = cls()
        for f in fields(cls):
            raw = _env(f.name)
            if raw is None:
                continue
            setattr(cfg, f.name, _parse(f.type, raw))
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        cfg.data_dir = Path(cfg.data_dir)
        return cfg


def _parse(typ: object, raw: str) -> object:
    t = str(typ)
    if t.startswith("int"):
        return int(raw)
    if t.startswith("float"):
        return float(raw)
    if t.startswith("bool"):
        return raw.lower() in ("1", "true", "yes", "on")
    if t.startswith("list"):
        return [x.strip() for x in raw.split(",") if x.strip()]
    if t.startswith("Path"):
        return Path(raw)
    return raw
