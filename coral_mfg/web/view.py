"""The web view of a run, when ``--http`` asks for one: its hub (a sink of the run) and its
server, built from the settings and started once the run is built."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from coral_mfg.config.settings import Settings
from coral_mfg.outputs.base import Sink
from coral_mfg.runtime.shape_edit import ShapeEditor
from coral_mfg.runtime.status import StatusBoard
from coral_mfg.web.hub import WebHub
from coral_mfg.web.metrics import Metrics

if TYPE_CHECKING:
    from coral_mfg.web.server import WebServer


class WebView:
    """The web server and its hub, when ``--http`` asks for them; else nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub: WebHub | None = None
        self.server: WebServer | None = None
        http = settings.http
        if http.http is not None:
            from coral_mfg.web.server import preflight

            preflight(http.http, http.http_token, http.http_admin_token)  # before the models
            self.hub = WebHub(settings.mask, Metrics())

    @property
    def sinks(self) -> list[Sink]:
        return [self.hub] if self.hub is not None else []

    def start(self, board: StatusBoard, editor: ShapeEditor | None = None) -> None:
        """Serve the run whose status ``board`` holds (or do nothing without --http);
        ``editor`` lets admins change its zones."""
        if self.hub is None:
            return
        from coral_mfg.web.server import WebServer  # aiohttp loads only for a served run

        self.hub.metrics.watch(board)
        http = self.settings.http
        assert http.http is not None
        self.server = WebServer(http.http, http.http_token, self.hub, board,
                                self.settings.snapshot_folder,
                                max_connections=http.http_max_connections,
                                max_viewers=http.http_max_viewers,
                                history=self.settings.history_file,
                                shifts=self.settings.output.shifts,
                                admin_token=http.http_admin_token, editor=editor)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @contextlib.contextmanager
    def serving(self, board: StatusBoard, editor: ShapeEditor | None = None
                ) -> Iterator[None]:
        """Serve while the block runs; stopped on every way out of it."""
        try:
            self.start(board, editor)
            yield
        finally:
            self.stop()
