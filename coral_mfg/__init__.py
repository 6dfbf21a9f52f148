"""coral_mfg: dual-stream manufacturing inspection on a Coral Edge TPU or the CPU."""

__version__ = "0.1.0"
