"""The window's main loop: keys, pause, HUD, and drawing each stream's newest result."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import glfw

from coral_mfg.config.settings import Settings
from coral_mfg.core.clock import file_utc
from coral_mfg.core.errors import UserError
from coral_mfg.core.results import STREAMS, VISUAL_INSPECTION, WORKER_SAFETY
from coral_mfg.render.editor import ZoneEditor
from coral_mfg.render.window import IDLE_WAIT_S, DisplaySink, Window, scene_for
from coral_mfg.runtime.control import RunControl

log = logging.getLogger(__name__)

TITLES = {WORKER_SAFETY: "WORKER SAFETY", VISUAL_INSPECTION: "VISUAL INSPECTION"}


class WindowApp:
    """The window's side of a run: keys, mouse, HUD and drawing, on the main thread."""

    def __init__(self, settings: Settings, run: RunControl, display: DisplaySink) -> None:
        self.settings = settings
        self.control = run
        self.display = display
        self.window = Window(settings.out_size, fullscreen=settings.window.fullscreen)
        self.show_hud = True
        watcher = run.zone_watcher
        self.editor = ZoneEditor(run.zone_store, watcher, settings.out_size)
        self.quit = False
        self._shown: dict[str, int] = {}
        self._dirty = True

    # --- HUD -------------------------------------------------------------------------------

    def hud(self, stream: str) -> list[str]:
        """The HUD of a pane, made from the run's status."""
        s = self.control.board.current
        st = s.stream(stream)
        device = "Edge TPU" if s.accelerator.device == "edgetpu" else "CPU"
        if s.accelerator.fallback:
            device += " (Edge TPU failed: fallback)"
        lines = [
            f"{TITLES[stream]}  {Path(st.source).name}",
            f"{st.fps:5.1f} fps   inference {st.inference_ms:5.1f} ms",
            f"{device}  {s.accelerator.detector}",
            f"dropped {st.dropped}",
        ]
        if stream == WORKER_SAFETY:
            now = time.monotonic()
            in_zone = ", ".join(f"{o.zone} #{o.track} {now - o.since:.0f} s"
                                for o in s.occupants) or "nobody"
            lines.append(f"in zone now: {in_zone}")
            lines.append(f"violations {s.violations}   zones "
                         + ", ".join(z.name for z in s.zones if z.enabled))
            if s.zone_error:
                lines.append(f"ZONE FILE REFUSED: {s.zone_error}"[:110])
        else:
            lines.append("   ".join(f"{grade} {n}" for grade, n in s.inspected)[:110])
        if s.paused:
            lines.append("PAUSED (space to resume)")
        if s.output_warning:
            lines.append(s.output_warning[:110])
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
                self.control.set_paused(not self.control.paused.is_set())
            elif key == glfw.KEY_F:
                self.window.toggle_fullscreen()
            elif key == glfw.KEY_E:
                self.editor.enter()
            elif key == glfw.KEY_H:
                self.show_hud = not self.show_hud
            elif key == glfw.KEY_S:
                path = Path(f"coral-mfg-{file_utc(time.time())}.png").resolve()
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
        status = self.control.board.current
        editing = (tuple(z.outline for z in self.control.zone_store.zones if z.enabled)
                   if self.editor.active else None)
        layer = scene_for(
            snap, self.window.atlas, self.window.pane_size, mask=self.settings.mask,
            hud=self.hud if self.show_hud else None,
            status=lambda stream: status.stream(stream).reason, zones=editing,
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
            done = self.control.poll(0)
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
