"""The Python client for the hub's WebSocket protocol: a ``Producer`` that never duplicates a chunk
across reconnects, a ``Subscriber`` that resumes exactly where it stopped, and ``cancel`` over HTTP."""

from hub.client.websocket import Chunk, ClientError, Producer, StreamReset, Subscriber, cancel

__all__ = ["Chunk", "ClientError", "Producer", "StreamReset", "Subscriber", "cancel"]
