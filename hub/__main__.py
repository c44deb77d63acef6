"""``resumable-hub serve`` / ``python -m hub serve``: run the hub.

What an operator can fix ends the process at once with one line on stderr and exit code 2 (the code the
systemd unit's ``RestartPreventExitStatus`` names): a bad setting, a busy port, a data dir that cannot be
created or written or that another hub holds. Everything else is a bug and keeps its traceback. The
listening socket is bound here, before the app starts, so a busy port is reported as such and
``--port 0`` can print the port it got.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from hub.app import make_app
from hub.core.config import Config, ConfigError, seconds_or_off
from hub.core.datadir import DataDirBusy, DataDirLock
from hub.core.gcpolicy import GcPolicy
from hub.core.logs import access_logger, setup_logging
from hub.core.service import HUB

EXIT_CONFIG = 2


class StartupError(Exception):
    """Something the operator must fix; its message is the one line printed."""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="resumable-hub", description="Resumable AI chat streams hub")
    sub = ap.add_subparsers(dest="cmd")
    sv = sub.add_parser("serve", help="run the hub (flags override RHUB_* environment variables)")
    sv.add_argument("--host", help="bind address (RHUB_HOST, default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port, 0 = any free port (RHUB_PORT, default 8765)")
    sv.add_argument("--data-dir", help="where streams live (RHUB_DATA_DIR, default ./data)")
    sv.add_argument(
        "--store",
        help="storage engine: redis://host:port/db for hubs side by side (RHUB_STORE; default: files in --data-dir)",
    )
    sv.add_argument("--fsync", choices=["always", "interval", "never"], help="durability policy (RHUB_FSYNC)")
    sv.add_argument(
        "--fsync-interval-ms",
        type=float,
        help="kept for compatibility: commits no longer wait (RHUB_FSYNC_INTERVAL_MS)",
    )
    sv.add_argument("--admin-token", help="bearer token for /admin and /metrics (RHUB_ADMIN_TOKEN)")
    sv.add_argument("--admin-token-file", help="read the admin token from this file (RHUB_ADMIN_TOKEN_FILE)")
    sv.add_argument("--jwt-secret", help="turn auth on: HS256 key for stream tokens (RHUB_JWT_SECRET)")
    sv.add_argument(
        "--allowed-origins", help="comma-separated browser Origin allow-list (RHUB_ALLOWED_ORIGINS)"
    )
    sv.add_argument(
        "--stream-ttl-s", type=seconds_or_off, help="keep closed streams this long (RHUB_STREAM_TTL_S)"
    )
    sv.add_argument(
        "--max-total-bytes", type=int, help="stored bytes cap, oldest answers go first (RHUB_MAX_TOTAL_BYTES)"
    )
    sv.add_argument(
        "--producer-lease-s",
        type=seconds_or_off,
        help="end an open stream whose producer is gone this long (RHUB_PRODUCER_LEASE_S, default 30)",
    )
    sv.add_argument(
        "--open-ttl-s", type=seconds_or_off, help="end a stream still open this long (RHUB_OPEN_TTL_S)"
    )
    sv.add_argument(
        "--access-log",
        choices=["off", "on", "json"],
        help="per-request log lines (RHUB_ACCESS_LOG, default off)",
    )
    sv.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="(RHUB_LOG_LEVEL, default info)"
    )
    sv.add_argument(
        "--archive-delay-s",
        type=seconds_or_off,
        help="archive finished answers this long after their close (RHUB_ARCHIVE_DELAY_S)",
    )
    sv.add_argument(
        "--ws-compress",
        action="store_true",
        default=None,
        help="accept permessage-deflate on WebSockets, ~100 KiB more per connection (RHUB_WS_COMPRESS)",
    )
    sv.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        default=None,
        help="keep CPython's default collector instead of freezing long-lived objects (RHUB_GC_FREEZE=0)",
    )
    sv.add_argument("--demo", action="store_true", default=None, help="serve the demo chat at / (RHUB_DEMO)")
    sv.add_argument("--generator", help="module:function, an async generator of answers (RHUB_GENERATOR)")
    sv.add_argument("--llm-base-url", help="an OpenAI-compatible API for answers (RHUB_LLM_BASE_URL)")
    sv.add_argument("--llm-model", help="the model name for --llm-base-url (RHUB_LLM_MODEL)")
    sv.add_argument("--aisdk-prefix", help="where the AI SDK endpoints live (RHUB_AISDK_PREFIX, /api/chat)")
    sv.add_argument(
        "--usage-webhook", help="POST a JSON usage record per ended answer to this URL (RHUB_USAGE_WEBHOOK)"
    )
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    if args.cmd != "serve":
        ap.print_help()
        sys.exit(EXIT_CONFIG)
    try:
        cfg, token_source = configure(args)
        if not cfg.store or cfg.store.startswith("file:"):  # hubs on Redis share no data dir
            DataDirLock.check(cfg.data_dir)  # before the port: a second hub is told about the dir
        sock = listen(cfg.host, cfg.port)
    except (StartupError, ConfigError, DataDirBusy) as e:
        fail(str(e))
    except OSError as e:  # the data dir: cannot create it, or it is not a directory
        fail(f"data dir {cfg.data_dir.resolve()}: {e.strerror or e}")
    setup_logging(cfg.log_level, cfg.access_log)
    app = make_app(cfg)
    if cfg.gc_freeze:
        app.cleanup_ctx.append(gc_policy)
    port = sock.getsockname()[1]
    print(
        f"resumable-hub: data in {cfg.store or cfg.data_dir.resolve()} (fsync={cfg.fsync}, "
        f"auth={'on' if cfg.jwt_secret else 'off'}, producer lease {_seconds(cfg.producer_lease_s)})",
        flush=True,
    )
    print(f"resumable-hub: admin token {token_source}", flush=True)
    if cfg.demo:
        admin = f"/admin?token={cfg.admin_token}" if token_source.startswith("(random)") else "/admin"
        print(f"resumable-hub: demo chat at http://{cfg.host}:{port}/  (admin: {admin})", flush=True)
    try:
        web.run_app(app, sock=sock, print=_print, shutdown_timeout=5, **access_logger(cfg.access_log))
    except DataDirBusy as e:  # lost a race with another hub between the check and the start
        fail(str(e))
    except OSError as e:
        if e.filename is None or not Path(e.filename).is_relative_to(cfg.data_dir.resolve()):
            raise
        fail(f"data dir {cfg.data_dir.resolve()}: {e.strerror or e}")


async def gc_policy(app: web.Application) -> AsyncIterator[None]:
    """The process's collector policy while it serves (process-wide: never part of ``make_app``)."""
    hub = app[HUB]
    streams_ended = 0

    def one_more(*_: object) -> None:
        nonlocal streams_ended
        streams_ended += 1

    hub.hooks.ended.append(one_more)  # a stream deleted before its end is an ending too; one ended
    hub.hooks.deleted.append(one_more)  # and then deleted counts twice: the thaw comes a little early
    c = hub.counters
    policy = hub.gc = GcPolicy(
        ended=lambda: c.connections_total - len(hub.connections) + streams_ended,
        alive=lambda: len(hub.connections) + hub.storage_stats()["streams_loaded"],
    )
    policy.install()
    task = asyncio.get_running_loop().create_task(policy.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    policy.uninstall()


def configure(args: argparse.Namespace) -> tuple[Config, str]:
    """The config (flags over environment over defaults) and a printable note on the admin token."""
    origins = args.allowed_origins.split(",") if args.allowed_origins else None
    cfg = Config.from_env(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        store=args.store,
        fsync=args.fsync,
        fsync_interval_ms=args.fsync_interval_ms,
        admin_token=args.admin_token,
        admin_token_file=Path(args.admin_token_file) if args.admin_token_file else None,
        jwt_secret=args.jwt_secret,
        allowed_origins=origins,
        stream_ttl_s=args.stream_ttl_s,
        max_total_bytes=args.max_total_bytes,
        producer_lease_s=args.producer_lease_s,
        open_ttl_s=args.open_ttl_s,
        access_log=args.access_log,
        log_level=args.log_level,
        archive_delay_s=args.archive_delay_s,
        ws_compress=args.ws_compress,
        gc_freeze=args.gc_freeze,
        demo=args.demo,
        generator=args.generator,
        llm_base_url=args.llm_base_url,
        llm_model=args.llm_model,
        aisdk_prefix=args.aisdk_prefix,
        usage_webhook=args.usage_webhook,
    )
    if args.admin_token:
        return cfg, "from --admin-token"
    if os.environ.get("RHUB_ADMIN_TOKEN"):
        return cfg, "from RHUB_ADMIN_TOKEN"
    if cfg.admin_token_file is not None:
        try:
            token = cfg.admin_token_file.read_text().strip()
        except OSError as e:
            raise StartupError(f"admin token file {cfg.admin_token_file}: {e.strerror or e}") from None
        if not token:
            raise StartupError(f"admin token file {cfg.admin_token_file} is empty")
        cfg.admin_token = token
        return cfg, f"from {cfg.admin_token_file}"
    cfg.admin_token = secrets.token_urlsafe(18)
    return cfg, f"(random) {cfg.admin_token}  (set RHUB_ADMIN_TOKEN or RHUB_ADMIN_TOKEN_FILE to keep one)"


def listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old sockets linger
    try:
        sock.bind(addr)
        sock.listen(1024)
    except OSError as e:
        sock.close()
        why = (
            "address already in use (another hub, or another program)"
            if e.errno == errno.EADDRINUSE
            else e.strerror
        )
        raise StartupError(f"cannot listen on {host}:{port}: {why}") from None
    return sock


def fail(message: str) -> None:
    print(f"resumable-hub: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_CONFIG)


def _seconds(v: float | None) -> str:
    return "off" if v is None else f"{v:g} s"


_print: Callable[[str], None] = lambda msg: print(msg, flush=True)  # noqa: E731


if __name__ == "__main__":
    main()
