"""One error table (issue 11): docs/protocol.md's error codes are exactly hub/core/errors.py's
``STATUS``, with the same HTTP statuses, and every code the hub's or storage's source can raise is in
it. Socket-free: it reads the docs and the source."""

from __future__ import annotations

import re
from pathlib import Path

import storage.errors
from hub.core.errors import STATUS

ROOT = Path(__file__).resolve().parents[2]


def documented() -> dict[str, int]:
    text = (ROOT / "docs/protocol.md").read_text()
    section = text[text.index("## Error codes") :]
    section = section[: section.index("\n## ", 4)]
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", section, re.M)
    assert rows, "no error table in docs/protocol.md"
    table = dict(rows)
    assert len(table) == len(rows), "a code is listed twice"
    return {k: int(v) for k, v in table.items()}


def raised_in_source() -> set[str]:
    """Codes passed literally to HubError/DSError anywhere under hub/ (first or second argument)."""
    pattern = re.compile(r"\b(?:HubError|DSError)\(\s*(?:\d{3},\s*)?\"([a-z_]+)\"", re.S)
    codes: set[str] = set()
    for path in (ROOT / "hub").rglob("*.py"):
        codes |= set(pattern.findall(path.read_text()))
    return codes


def storage_codes() -> set[str]:
    return {
        cls.code
        for cls in vars(storage.errors).values()
        if isinstance(cls, type) and issubclass(cls, storage.errors.StorageError)
    }


def test_docs_table_is_the_code_table() -> None:
    docs = documented()
    assert set(docs) == set(STATUS), (
        f"only in docs: {sorted(set(docs) - set(STATUS))}; only in code: {sorted(set(STATUS) - set(docs))}"
    )
    wrong = {c: (docs[c], STATUS[c]) for c in docs if docs[c] != STATUS[c]}
    assert not wrong, f"docs vs code HTTP status: {wrong}"


def test_every_code_the_source_raises_is_in_the_table() -> None:
    used = raised_in_source() | storage_codes()
    assert len(used) > 15  # the scan found the hub's raises
    assert used <= set(STATUS), f"raised but not in the table: {sorted(used - set(STATUS))}"
