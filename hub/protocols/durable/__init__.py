"""The Durable Streams protocol (1.0) on the hub's own storage, under ``/v1/stream/{path}``.

A Durable Streams stream *is* a hub stream: the stream id is exactly ``{path}``, so
``/v1/stream/chat/1/a`` and the WebSocket stream ``chat/1/a`` are one log. Offsets map one-to-one to
chunk offsets: chunk ``n`` is the token ``{n:016d}_0000000000000000`` (fixed width, so tokens sort
like offsets; the second field is reserved and always zero). One POST body is one chunk, except in
JSON mode where each element of a top-level array is its own chunk; a read concatenates chunks (or
wraps them in a JSON array). docs/durable-streams.md is the prose twin of this module.

What the protocol keeps, and where:

* content type, ``Stream-Expires-At`` and ``Stream-TTL`` (a sliding idle window) are the stream's
  ``StreamMeta`` fields ``content_type``, ``expires_at`` and ``idle_ttl``; retention expires them;
* idempotent-producer state and the last ``Stream-Seq`` are the producer mark inside the very DATA
  record they guard, so they are durable exactly when the data is and a retry after a crash is
  still recognised;
* forks are copies of the source's prefix (same offsets); the fork origin and the "soft-deleted"
  state of a source that still has forks live in the stream's labels (``ds.*``).

The package is split the usual way: ``wire`` (pure parsing and framing: headers, offsets, cursors,
JSON messages, SSE events, producer validation), ``state`` (per-app settings, fork graph, locks),
``forks`` (what a fork copies, and the soft-delete graph), and ``handlers``, the aiohttp handlers
that only move bytes.
"""

from hub.protocols.durable.handlers import setup
from hub.protocols.durable.state import DS, Durable, DurableConfig

__all__ = ["DS", "Durable", "DurableConfig", "setup"]
