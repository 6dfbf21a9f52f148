"""Inference: the runtime that opens interpreters and the adapters that read them."""
