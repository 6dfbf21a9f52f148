"""The window's main loop: keys, pause, HUD, and drawing each stream's newest result."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import glfw

from coral_mfg.config.settings import Settings
from coral_mfg.core.errors import UserError
from coral_mfg.core.results import STREAMS, VISUAL_INSPECTION, WORKER_SAFETY
from coral_mfg.render.editor import ZoneEditor
from coral_mfg.render.window import IDLE_WAIT_S, DisplaySink, Window, scene_for
from coral_mfg.runtime.pipeline import Pipeline

log = logging.getLogger(__name__)

TITLES = {WORKER_SAFETY: "WORKER SAFETY", VISUAL_INSPECTION: "VISUAL INSPECTION"}


class WindowApp:
    """The window's side of a run: keys, mouse, HUD and drawing, on the main thread."""

    def __init__(self, settings: Settings, pipeline: Pipeline, display: DisplaySink) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.display = display
        self.window = Window(settings.out_size, fullscreen=settings.window.fullscreen)
        self.show_hud = True
        watcher = pipeline.zone_watcher
        assert watcher is not None
        self.editor = ZoneEditor(pipeline.zone_store, watcher, settings.out_size)
        self.quit = False
        self._shown: dict[str, int] = {}
        self._dirty = True

    # --- HUD -------------------------------------------------------------------------------

    def hud(self, stream: str) -> list[str]:
        p = self.pipeline
        fps, ms = self.display.rates(stream)
        device = "Edge TPU" if p.device == "edgetpu" else "CPU"
        if p.inference.pool.fallen_back:
            device += " (Edge TPU failed: fallback)"
        source = Path(p.units[stream].config.spec).name
        lines = [
            f"{TITLES[stream]}  {source}",
            f"{fps:5.1f} fps   inference {ms:5.1f} ms",
            f"{device}  {p.inference.plan.detector_name}",
            f"dropped {p.dropped()[stream]}",
        ]
        if stream == WORKER_SAFETY:
            now_s = time.monotonic()
            now = ", ".join(f"{zone} #{track} {now_s - since:.0f} s"
                            for zone, track, since in p.safety.debounce.occupancy()) or "nobody"
            lines.append(f"in zone now: {now}")
            lines.append(f"violations {p.safety.violations}   zones "
                         + ", ".join(z.name for z in p.zone_store.zones if z.enabled))
            if p.zone_warning():
                lines.append(f"ZONE FILE REFUSED: {p.zone_warning()}"[:110])
        else:
            counts = p.inspection.counts()
            lines.append("   ".join(f"{grade} {n}" for grade, n in counts.items())[:110])
        if p.paused.is_set():
            lines.append("PAUSED (space to resume)")
        warning = p.output_warning()
        if warning:
            lines.append(warning[:110])
        return lines

    # --- keys ------------------------------------------------------------------------------

    def handle_keys(self) -> None:
        while self.window.keys:
            key, mods = self.window.keys.popleft()
            self._dirty = True
            if self.editor.active and self._edit_key(key, mods):
                continue
            if key in (glfw.KEY_Q, glfw.KEY_ESCAPE):
                self.quit = True
            elif key == glfw.KEY_SPACE:
                self.pipeline.set_paused(not self.pipeline.paused.is_set())
            elif key == glfw.KEY_F:
                self.window.toggle_fullscreen()
            elif key == glfw.KEY_E:
                self.editor.enter()
            elif key == glfw.KEY_H:
                self.show_hud = not self.show_hud
            elif key == glfw.KEY_S:
                path = Path(time.strftime("coral-mfg-%Y%m%d-%H%M%S.png")).resolve()
                self.render()
                log.info("screenshot saved to %s", self.window.screenshot(path))

    def _edit_key(self, key: int, mods: int) -> bool:
        """Keys that mean something else in edit mode; True when handled."""
        if key in (glfw.KEY_ESCAPE, glfw.KEY_E):
            self.editor.leave()
        elif key == glfw.KEY_N:
            self.editor.new_zone()
        elif key == glfw.KEY_TAB:
            self.editor.next_zone()
        elif key == glfw.KEY_S and mods & glfw.MOD_CONTROL:
            try:
                self.editor.save()
            except UserError as exc:
                self.editor.message = str(exc)
                log.warning("%s", exc)
        else:
            return False
        return True

    def handle_mouse(self) -> None:
        while self.window.mouse:
            kind, button, x, y = self.window.mouse.popleft()
            if not self.editor.active:
                continue
            self._dirty = True
            if kind == "press":
                self.editor.press(x, y, right=button == glfw.MOUSE_BUTTON_RIGHT)
            elif kind == "release":
                self.editor.release()
            else:
                self.editor.move(x, y)

    # --- drawing ---------------------------------------------------------------------------

    def render(self) -> None:
        snap = self.display.snapshot()
        for i, stream in enumerate(STREAMS):
            if stream in snap and self._shown.get(stream) != snap[stream][0]:
                self.window.set_pane(i, snap[stream][1].frame.image)
                self._shown[stream] = snap[stream][0]
        layer = scene_for(
            snap, self.window.atlas, self.window.pane_size, self.pipeline.zone_store.zones,
            mask=self.settings.mask, hud=self.hud if self.show_hud else None,
            status=self.pipeline.status,
        )
        self.editor.draw(self.window.atlas, layer)
        self.window.draw(layer)

    def _changed(self) -> bool:
        snap = self.display.snapshot()
        return any(self._shown.get(s) != seq for s, (seq, _r) in snap.items())

    def run(self, stop: threading.Event) -> None:
        """Until q/Esc, window close, a stop signal, or (with --max_frames) the end."""
        automated = self.settings.inputs.max_frames > 0
        last_fb = self.window.framebuffer_size()
        last_hud = 0.0
        while not (stop.is_set() or self.quit or self.window.should_close):
            glfw.wait_events_timeout(IDLE_WAIT_S)
            self.handle_keys()
            self.handle_mouse()
            done = self.pipeline.poll(0)
            fb = self.window.framebuffer_size()
            now = time.monotonic()
            if fb != last_fb or self._changed() or self._dirty or (
                    self.show_hud and now - last_hud > 0.5):
                # the driver resizes its back buffer at a swap: draw once more after one
                self._dirty = fb != last_fb
                last_fb, last_hud = fb, now
                self.render()
                self.window.swap()
            if done and automated:
                break

    def finish(self) -> None:
        """Draw the final results (after the pipeline drained), save --screenshot, close."""
        try:
            self.render()
            shot = self.settings.window.screenshot
            if shot:
                log.info("screenshot saved to %s", self.window.screenshot(shot))
            self.window.swap()
            log.info("renderer: %d frames drawn, %d GL errors", self.window.frames_drawn,
                     self.window.gl_errors)
        finally:
            self.window.close()
