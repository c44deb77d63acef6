"""resumable-hub: AI chat responses that survive disconnections.

The tree follows the data path, producer -> hub -> storage -> subscribers:

* ``hub.producers``  what writes answers: the simulated LLM and a producer that pipes it into a stream
* ``hub.core``       the service every transport calls (counters, limits, cancel), fan-out with its
                     per-connection outbox, auth grants, configuration and the one error table
* ``hub.protocols``  thin adapters, each a wire format plus its routes: the native WebSocket and
                     HTTP/SSE API (``native``), Durable Streams (``durable``), chats and admin
* ``hub.client``     the Python client (Producer, Subscriber) for the native WebSocket protocol
* ``hub.demo``       the demo chat: its routes and pages (``hub/demo/static``)
* ``hub/static``     the browser library (ES modules, no build step), served at ``/static/``
* ``hub.app``        start-up wiring: the one place that names the storage engine and the routes

``storage`` (beside ``hub``) knows nothing of the hub.
"""
