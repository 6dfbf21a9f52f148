"""The OpenGL window: both streams side by side with their overlays and HUD."""
