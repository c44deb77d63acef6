"""The engine's Lua scripts: one file each beside this module (lua/), with lua/_lib.lua prepended,
loaded on the engine's script connection and called by EVALSHA (storage/redis/pipe.py)."""

from __future__ import annotations

from importlib import resources

from ..engine import PRODUCER_WINDOW

NAMES = ("create", "write", "load", "delete", "seal", "access", "labels")


def source(name: str) -> str:
    d = resources.files(__package__).joinpath("lua")
    lib = d.joinpath("_lib.lua").read_text()
    body = d.joinpath(f"{name}.lua").read_text()
    return (lib + "\n" + body).replace("PRODUCER_WINDOW", str(PRODUCER_WINDOW))
