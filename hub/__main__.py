"""``resumable-hub serve`` / ``python -m hub serve``: run the hub."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from aiohttp import web

from hub.app import make_app
from hub.core.config import Config


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="resumable-hub", description="Resumable AI chat streams hub")
    sub = ap.add_subparsers(dest="cmd")
    sv = sub.add_parser("serve", help="run the hub (flags override RHUB_* environment variables)")
    sv.add_argument("--host", help="bind address (RHUB_HOST, default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port, 0 = any free port (RHUB_PORT, default 8765)")
    sv.add_argument("--data-dir", help="where streams live (RHUB_DATA_DIR, default ./data)")
    sv.add_argument("--fsync", choices=["always", "interval", "never"], help="durability policy (RHUB_FSYNC)")
    sv.add_argument("--fsync-interval-ms", type=float, help="group commit window (RHUB_FSYNC_INTERVAL_MS)")
    sv.add_argument("--admin-token", help="bearer token for /admin and /metrics (RHUB_ADMIN_TOKEN)")
    sv.add_argument("--jwt-secret", help="turn auth on: HS256 key for stream tokens (RHUB_JWT_SECRET)")
    sv.add_argument(
        "--allowed-origins", help="comma-separated WebSocket Origin allow-list (RHUB_ALLOWED_ORIGINS)"
    )
    sv.add_argument("--stream-ttl-s", type=float, help="keep closed streams this long (RHUB_STREAM_TTL_S)")
    sv.add_argument(
        "--max-total-bytes", type=int, help="stored bytes cap, oldest answers go first (RHUB_MAX_TOTAL_BYTES)"
    )
    sv.add_argument("--demo", action="store_true", default=None, help="serve the demo chat at / (RHUB_DEMO)")
    args = ap.parse_args(argv)
    if args.cmd != "serve":
        ap.print_help()
        sys.exit(2)
    origins = args.allowed_origins.split(",") if args.allowed_origins else None
    cfg = Config.from_env(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        fsync=args.fsync,
        fsync_interval_ms=args.fsync_interval_ms,
        admin_token=args.admin_token,
        jwt_secret=args.jwt_secret,
        allowed_origins=origins,
        stream_ttl_s=args.stream_ttl_s,
        max_total_bytes=args.max_total_bytes,
        demo=args.demo,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = make_app(cfg)

    print(
        f"resumable-hub: data in {cfg.data_dir.resolve()} (fsync={cfg.fsync}, auth={'on' if cfg.jwt_secret else 'off'})",
        flush=True,
    )
    print(f"resumable-hub: admin token {cfg.admin_token}", flush=True)
    web.run_app(app, host=cfg.host, port=cfg.port, print=_printer(cfg), shutdown_timeout=5)


def _printer(cfg: Config) -> Callable[[str], None]:
    def p(msg: str) -> None:
        print(msg, flush=True)
        if cfg.demo:
            print(
                f"resumable-hub: demo chat at http://{cfg.host}:{cfg.port}/  (admin: /admin?token={cfg.admin_token})",
                flush=True,
            )

    return p


if __name__ == "__main__":
    main()
