"""The README's configuration table is the settings' one user-facing list: every ``Config`` field has a
row with its ``RHUB_*`` variable and its real default, and every ``serve`` flag is in it, next to the
variable it sets."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from hub.core.config import Config

from .procs import ROOT, clean_env

UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def readme_rows() -> dict[str, tuple[str, str]]:
    """env name -> (flag cell, default cell) from the table under "## Configuration"."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration") :]
    section = section[: section.index("\n#", 1)]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1].startswith("`RHUB_"):
            env = cells[1].strip("`")
            assert env not in rows, f"{env} has two rows"
            rows[env] = (cells[0].strip("`"), cells[2])
    return rows


def serve_flags() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "hub", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
        timeout=60,
    ).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]+)", out)) - {"--help"}


def documented_value(cell: str) -> float | str | None:
    """The default a cell states: its leading code span, sizes like `256 KiB` as bytes."""
    m = re.match(r"`([^`]*)`", cell)
    if m is None:
        return None
    raw = m.group(1)
    size = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB)?", raw)
    if size:
        return float(size.group(1)) * UNITS.get(size.group(2) or "", 1)
    return raw


def test_every_setting_has_a_row_with_its_default() -> None:
    rows = readme_rows()
    fields = {f"RHUB_{f.name.upper()}": f for f in dataclasses.fields(Config)}
    assert set(rows) == set(fields), (
        f"undocumented: {sorted(set(fields) - set(rows))}; no such setting: {sorted(set(rows) - set(fields))}"
    )
    defaults = Config()
    for env, f in fields.items():
        value = getattr(defaults, f.name)
        stated = documented_value(rows[env][1])
        if value is None or value == []:
            assert stated is None, f"{env}: the default is unset, the README says {rows[env][1]!r}"
        elif isinstance(value, bool):
            assert rows[env][1].startswith("on" if value else "off"), (env, rows[env][1])
        elif isinstance(value, int | float):
            assert stated == value, f"{env}: default {value}, the README says {rows[env][1]!r}"
        else:
            assert stated == str(value), f"{env}: default {value}, the README says {rows[env][1]!r}"


def test_every_flag_is_documented_next_to_its_variable() -> None:
    rows = readme_rows()
    flags = serve_flags()
    documented = {flag: env for env, (flag, _) in rows.items() if flag}
    assert set(documented) == flags, (
        f"flags missing from the README: {sorted(flags - set(documented))}; "
        f"documented but not accepted: {sorted(set(documented) - flags)}"
    )
    for flag, env in documented.items():
        name = flag[2:].removeprefix("no-")  # a switch that turns an on-by-default setting off
        assert env == "RHUB_" + name.replace("-", "_").upper(), f"{flag} sits in {env}'s row"


def test_the_table_parser_sees_the_table() -> None:
    """Guards the two tests above against passing on a table they failed to read."""
    rows = readme_rows()
    assert rows["RHUB_PORT"] == ("--port", "`8765`")
    assert documented_value(rows["RHUB_MAX_CHUNK_BYTES"][1]) == 256 << 10
    assert Path(ROOT / "README.md").is_file()
