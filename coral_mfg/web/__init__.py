"""The web view: live panes, events, metrics and health over HTTP, read from the run's
status. Imports the layers up to ``runtime``."""
