"""Where results go: the event log, recordings, snapshots, MQTT, harvested crops, and the
thread that feeds them. Each module is imported by its own name. Imports the layers up to
``analytics``."""
