"""coral_mfg: manufacturing inspection for one to eight cameras on Coral Edge TPUs or the CPU."""

__version__ = "0.1.0"
