"""The HTTP port of ``serve``: websocket adapters, ``/metrics`` and the web page."""
