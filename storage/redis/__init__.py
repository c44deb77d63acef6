"""The Redis Streams engine (``redis://host:port/db``): hubs side by side share streams through one Redis.

``engine`` (the Engine and its stream handles), ``live`` (one pub/sub connection for live traffic),
``keys`` (key and channel names), ``wire`` (what the scripts publish), ``sealed`` (finished streams
as one zstd value), ``scripts`` + ``lua/`` (the Lua scripts, one per change, run by EVALSHA).
"""

from .engine import RedisEngine, RedisOptions, RedisStream

__all__ = ["RedisEngine", "RedisOptions", "RedisStream"]
