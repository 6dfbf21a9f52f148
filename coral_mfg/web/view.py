"""The web view of a run, when ``--http`` asks for one: its hub (a sink of the run) and its
server, built from the settings and started once the run is built."""

from __future__ import annotations

from coral_mfg.config.settings import Settings
from coral_mfg.outputs.base import Sink
from coral_mfg.runtime.pipeline import Pipeline
from coral_mfg.web.hub import WebHub
from coral_mfg.web.metrics import Metrics
from coral_mfg.web.server import WebServer


class WebView:
    """The web server and its hub, when ``--http`` asks for them; else nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub: WebHub | None = None
        self.server: WebServer | None = None
        if settings.http.http is not None:
            self.hub = WebHub(lambda: (), settings.mask, Metrics())

    @property
    def sinks(self) -> list[Sink]:
        return [self.hub] if self.hub is not None else []

    def start(self, pipeline: Pipeline) -> None:
        if self.hub is None:
            return
        self.hub.zones = lambda: pipeline.zone_store.zones
        self.hub.metrics.watch(pipeline, self.hub.fps)
        snapshots = pipeline.ctx.snapshots.folder if pipeline.ctx.snapshots else None
        http = self.settings.http
        assert http.http is not None
        self.server = WebServer(http.http, http.http_token, self.hub, pipeline, snapshots,
                                max_connections=http.http_max_connections,
                                max_viewers=http.http_max_viewers)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
