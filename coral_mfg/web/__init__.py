"""The web view: live panes, events, metrics and health over HTTP."""
