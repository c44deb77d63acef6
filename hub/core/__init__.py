"""The hub's core: the service API, fan-out, auth, configuration and errors (no routes here)."""
