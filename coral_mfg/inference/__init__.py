"""Inference: the models in supervised processes, the adapters that feed and read them, the
Edge TPU found and checked. Imports ``core`` and ``config``."""
