"""The hub and nginx as an operator runs them: real processes on 127.0.0.1, output captured line by line.

``HubProcess`` starts ``python -m hub serve`` (the CLI, not the app object) with a clean ``RHUB_*``
environment and reads its stdout+stderr on a thread, so tests can wait for a line with a deadline and
assert on everything the hub printed. ``Nginx`` runs Debian's nginx with the shipped
``deploy/nginx/resumable-hub.conf`` (only its listen port, upstream servers and log paths rewritten) in
front of one or more hubs; the Redis engine's two-hub test uses it the same way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx" / "resumable-hub.conf"
NGINX = Path("/usr/sbin/nginx")
RUNNING = re.compile(r"Running on http://[^:\s]+:(\d+)")


def free_port() -> int:
    """A port nothing listens on right now (for programs that cannot bind port 0 and report it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def post(url: str, body: object) -> dict[str, object]:
    """POST ``body`` as JSON; the JSON answer."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        out: dict[str, object] = json.loads(r.read())
        return out


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any RHUB_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHUB_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Output:
    """Lines a child process prints, collected on a daemon thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._done = False
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if pred(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    raise AssertionError(f"no line {what} within {timeout} s; output:\n" + self.text())
                self._cond.wait(left)

    def wait_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._done and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))

    def text(self) -> str:
        return "\n".join(self.lines)


class HubProcess:
    """``python -m hub serve ARGS`` on 127.0.0.1; ``port`` is the one it reports (``--port 0`` works)."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "hub", "serve"),
        wait_ready: bool = True,
        cwd: Path | None = None,
    ) -> None:
        self.argv = [*command, *args]
        self.proc = subprocess.Popen(
            self.argv,
            env=env if env is not None else clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            start_new_session=True,
        )
        self.out = Output(self.proc)
        self.port = 0
        if wait_ready:
            line = self.out.wait_for(lambda s: RUNNING.search(s) is not None, 30, "saying where it runs")
            m = RUNNING.search(line)
            assert m is not None
            self.port = int(m.group(1))

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def exit_code(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its exit code."""
        rc = self.proc.wait(timeout)
        self.out.wait_closed(5)
        return rc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            return self.exit_code(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.exit_code(timeout)

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)


def render_nginx_conf(upstreams: Sequence[str], port: int, log_dir: Path) -> str:
    """The shipped config with only what a test must change: where it listens, where the hubs are,
    where it logs. Each rewrite must match exactly once, so an edit of the shipped file that this
    would silently miss fails here instead."""
    text = NGINX_CONF.read_text()
    rewrites = [
        (r"^(\s*)listen 80;$", lambda m: f"{m.group(1)}listen 127.0.0.1:{port};"),
        (
            r"^(\s*)server 127\.0\.0\.1:8765;$",
            lambda m: "\n".join(f"{m.group(1)}server {u};" for u in upstreams),
        ),
    ]
    for pattern, repl in rewrites:
        text, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        assert n == 1, f"{pattern!r} matched {n} times in {NGINX_CONF}"
    text, n = re.subn(r"/var/log/nginx/", f"{log_dir}/", text)
    assert n == 2, f"expected an access and an error log in {NGINX_CONF}, found {n}"
    return text


class Nginx:
    """Debian's nginx in the foreground with the shipped site config, on a free 127.0.0.1 port."""

    def __init__(self, root: Path, upstreams: Sequence[str]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.access_log = root / "resumable-hub.access.log"
        for attempt in range(3):  # free_port() can race another program binding the same port
            self.port = free_port()
            (root / "site.conf").write_text(render_nginx_conf(upstreams, self.port, root))
            (root / "nginx.conf").write_text(self._main_conf())
            self.proc = subprocess.Popen(
                [
                    str(NGINX),
                    "-p",
                    f"{root}/",
                    "-c",
                    str(root / "nginx.conf"),
                    "-e",
                    str(root / "startup.log"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            self.out = Output(self.proc)
            if self._wait_listening(10):
                return
            self.stop()
            if "Address already in use" not in self.out.text() or attempt == 2:
                raise AssertionError(f"nginx did not start:\n{self.out.text()}\n{self._errors()}")

    def _main_conf(self) -> str:
        r = self.root
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the tmp dir
        return (
            f"{user}daemon off;\nworker_processes 1;\npid {r}/nginx.pid;\nerror_log {r}/error.log info;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"  client_body_temp_path {r}/body; proxy_temp_path {r}/proxy;\n"
            f"  fastcgi_temp_path {r}/fastcgi; uwsgi_temp_path {r}/uwsgi; scgi_temp_path {r}/scgi;\n"
            f"  access_log {r}/default.access.log;\n"
            f"  include {r}/site.conf;\n"
            "}\n"
        )

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.02)
        return False

    def _errors(self) -> str:
        logs = [self.root / "error.log", self.root / "startup.log", self.root / "resumable-hub.error.log"]
        return "\n".join(p.read_text() for p in logs if p.exists())

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
