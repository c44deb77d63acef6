"""Token streams for the storage benchmark, all offline and deterministic.

Two sources, both cut into 1-8 character tokens by ``hub.producers.llm_sim.tokenize`` (the same cutter):

* ``llm_tokens``: answers of the simulated LLM (``hub.producers.llm_sim``). Realistic token sizes and markdown
  shape, but assembled from a few hundred fixed fragments, so it is far more repetitive than real
  model output and flatters any compressor.
* ``prose_tokens``: real English technical prose that ships with Python itself: the language
  reference topics of ``pydoc_data`` and the triple-quoted docstrings of the standard library
  (tests excluded, each text once, dedented with ``inspect.cleandoc``). Closer to what a model writes
  about software: varied vocabulary, sentences that do not recur, some code samples.
"""

from __future__ import annotations

import functools
import inspect
import re
import sysconfig
from pathlib import Path

from hub.producers import llm_sim

_TRIPLE = re.compile(r'"""(.*?)"""', re.S)
_SKIP = ("test/", "tests/", "site-packages/", "idlelib/idle_test/", "lib2to3/tests/", "unittest/test/")


def llm_tokens(n: int, seed: int = 0) -> list[bytes]:
    """``n`` tokens of consecutive simulated answers (seeds ``seed``, ``seed + 1``, ...)."""
    out: list[bytes] = []
    s = seed
    while len(out) < n:
        out += [t.encode() for t in llm_sim.tokens(s)]
        s += 1
    return out[:n]


def llm_answers(n: int, seed: int = 10_000) -> list[list[bytes]]:
    """``n`` separate simulated answers of 3-8 paragraphs (about 1-4 KB each), as token lists."""
    return [[t.encode() for t in llm_sim.tokens(seed + i, paragraphs=3 + i % 6)] for i in range(n)]


@functools.cache
def prose_texts() -> tuple[str, ...]:
    """English prose documents in a fixed order: pydoc topics, then stdlib docstrings."""
    from pydoc_data import topics

    docs: list[str] = [topics.topics[k] for k in sorted(topics.topics)]
    seen = set(docs)
    std = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(std.rglob("*.py")):
        rel = p.relative_to(std).as_posix()
        if rel.startswith(_SKIP) or "/tests/" in rel or "/test/" in rel:
            continue
        try:
            src = p.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for m in _TRIPLE.finditer(src):
            d = inspect.cleandoc(m.group(1))
            letters = sum(c.isalpha() or c == " " for c in d)
            if len(d) < 80 or d in seen or letters < 0.75 * len(d):
                continue  # short, repeated, or mostly code/tables rather than prose
            seen.add(d)
            docs.append(d)
    return tuple(docs)


def prose_tokens(n: int | None = None) -> list[bytes]:
    """Up to ``n`` tokens of the prose corpus, documents separated by a blank line (never cycled)."""
    out: list[bytes] = []
    for d in prose_texts():
        out += [t.encode() for t in llm_sim.tokenize(d + "\n\n")]
        if n is not None and len(out) >= n:
            return out[:n]
    return out


def prose_answers(n: int, lo: int = 1000, hi: int = 4000) -> list[list[bytes]]:
    """``n`` single responses of ``lo``..``hi`` characters cut from the prose corpus, as token lists."""
    out: list[list[bytes]] = []
    buf = ""
    want = lo + (hi - lo) // 3
    for d in prose_texts():
        buf += d + "\n\n"
        if len(buf) >= want:
            out.append([t.encode() for t in llm_sim.tokenize(buf[:want])])
            buf = ""
            want = lo + (len(out) * 997) % (hi - lo)  # spread the sizes over lo..hi, deterministically
            if len(out) == n:
                break
    return out
