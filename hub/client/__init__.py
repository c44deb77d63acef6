"""The Python client for the hub: over WebSocket a ``Producer`` that never duplicates a chunk across
reconnects and a ``Subscriber`` that resumes exactly where it stopped; over plain HTTP an
``HttpProducer`` with the same shape; and ``cancel`` over HTTP."""

from hub.client.http import HttpProducer
from hub.client.websocket import Chunk, ClientError, Producer, StreamReset, Subscriber, cancel

__all__ = ["Chunk", "ClientError", "HttpProducer", "Producer", "StreamReset", "Subscriber", "cancel"]
