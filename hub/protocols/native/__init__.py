"""The hub's own protocol: typed WebSocket messages (``messages``), the ``/ws`` endpoint (``ws``) and
the plain HTTP producer/read API with Server-Sent Events (``http``)."""
