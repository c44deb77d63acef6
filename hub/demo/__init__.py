"""The demo: a chat page at ``/``, an admin page, and ``POST /demo/ask`` driving the simulated model."""

from hub.demo.routes import setup

__all__ = ["setup"]
