"""The OpenGL window: the streams with their overlays and HUD, read from the run's status.
Imports the layers up to ``runtime``."""
