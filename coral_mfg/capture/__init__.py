"""Cameras, streams and files, each read by its own supervised thread. Imports ``core``
and ``config``."""
