"""The embedded file engine: one append-only, segmented, zstd-sealed log per stream on local disk.

Layers, bottom up, each without the ones above: ``record`` (framing), ``index`` (sparse offset
index), ``segment`` (files, scan, recovery), ``log`` (one stream, synchronous), ``store`` (many
streams: group commit, sealing, retention, the file-handle LRU; the asyncio layer, and the
``storage.engine.Engine`` the hub uses).
"""

from .log import Log, LogOptions
from .store import POLICIES, Store, StoreOptions, Stream

__all__ = ["POLICIES", "Log", "LogOptions", "Store", "StoreOptions", "Stream"]
