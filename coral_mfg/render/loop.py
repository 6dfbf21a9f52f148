"""The window's main loop: keys, pause, HUD, and drawing each camera's newest result.

The cameras fill a grid fitted to the screen; a number key (or a click on a
pane) enlarges one camera, and the same key, 0 or another click brings the grid
back. Zone editing (``e``) works on an enlarged safety camera.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import glfw

from coral_mfg.config.settings import Settings
from coral_mfg.core.clock import file_utc
from coral_mfg.core.errors import UserError
from coral_mfg.core.results import PersonObject
from coral_mfg.core.status import ENDED, PAUSED, StreamStatus
from coral_mfg.outputs.panel import AMBER, Panel, Segment, build_panel
from coral_mfg.render.editor import ZoneEditor
from coral_mfg.render.window import CHAR, IDLE_WAIT_S, DisplaySink, Window, scene_for
from coral_mfg.runtime.control import RunControl

log = logging.getLogger(__name__)

NUMBER_KEYS = {getattr(glfw, f"KEY_{n}"): n for n in range(10)}
NUMBER_KEYS.update({getattr(glfw, f"KEY_KP_{n}"): n for n in range(10)})


class WindowApp:
    """The window's side of a run: keys, mouse, HUD and drawing, on the main thread."""

    def __init__(self, settings: Settings, run: RunControl, display: DisplaySink) -> None:
        self.settings = settings
        self.control = run
        self.display = display
        self.cameras = tuple(s.name for s in run.board.current.streams)
        self.window = Window(settings.out_size, fullscreen=settings.window.fullscreen,
                             cameras=len(self.cameras))
        self.show_hud = False  # h: the inference details instead of the shift's totals
        self.editor: ZoneEditor | None = None
        self.message = ""  # a one-off answer to a key, until the next key
        self.quit = False
        self._shown: dict[str, int] = {}
        self._dirty = True

    # --- layout ----------------------------------------------------------------------------

    @property
    def focused(self) -> str | None:
        """The camera enlarged, if one is."""
        shown = self.window.shown
        return self.cameras[shown[0]] if len(shown) == 1 and len(self.cameras) > 1 else None

    def focus(self, camera: str | None) -> None:
        """Enlarge ``camera``, or (None) show the grid again; editing ends either way."""
        self.leave_editor()
        if camera is None:
            self.window.show(tuple(range(len(self.cameras))))
        else:
            self.window.show((self.cameras.index(camera),))
        self._dirty = True

    def _number(self, n: int) -> None:
        if n == 0 or n > len(self.cameras) or self.focused == self.cameras[n - 1]:
            self.focus(None)
        else:
            self.focus(self.cameras[n - 1])

    # --- zone editing ------------------------------------------------------------------------

    def enter_editor(self) -> None:
        """Edit the zones of the camera enlarged, else of the only (or first) safety camera,
        which is enlarged for it."""
        watcher, shapes = self.control.zone_watcher, self.control.shape_editor
        if watcher is None or shapes is None:
            self.message = "no camera has keep-out zones to edit"
            return
        camera = self.focused or (self.cameras[0] if len(self.cameras) == 1 else None)
        target = watcher.target(camera) if camera is not None else watcher.targets[0]
        if target is None:
            self.message = f"camera {camera} has no keep-out zones: enlarge a safety camera"
            return
        if len(self.cameras) > 1:
            self.window.show((self.cameras.index(target.camera),))
        self.editor = ZoneEditor(target, shapes)
        self.editor.enter()

    def leave_editor(self) -> None:
        if self.editor is not None and self.editor.leave():
            self.message = "unsaved zone changes dropped: the saved zones are in force"
        self.editor = None

    # --- the strips ----------------------------------------------------------------------

    def panel(self, camera: str) -> Panel:
        """The strip under a camera's picture, made from the run's status; ``h`` shows the
        inference details instead of the shift's totals."""
        shown = self.display.snapshot().get(camera)
        people = None if shown is None else [o for o in shown[1].objects
                                             if isinstance(o, PersonObject)]
        panel = build_panel(self.control.board.current, camera, time.time(),
                            details=self.show_hud, people=people)
        editor = self.editor
        if editor is not None and editor.active and editor.camera == camera:
            keys, state = editor.help_lines()
            return Panel((panel.lines[0], (Segment(keys[:110], AMBER),),
                          (Segment(state[:110]),)), panel.dot, panel.alarm, panel.health)
        if not self.message:
            return panel
        lines = (*panel.lines[:2], (Segment(self.message[:110], AMBER),))
        return Panel(lines, panel.dot, panel.alarm, panel.health)

    # --- keys ------------------------------------------------------------------------------

    def handle_keys(self) -> None:
        asked = False  # the last key started typing a name: its own character is not typed
        while self.window.keys:
            key, mods = self.window.keys.popleft()
            editor = self.editor
            if key == CHAR:
                if editor is not None and editor.naming is not None and not asked:
                    editor.type(chr(mods))
                    self._dirty = True
                asked = False
                continue
            self._dirty = True
            self.message = ""
            naming = editor is not None and editor.naming is not None
            if editor is not None and self._edit_key(editor, key, mods):
                asked = not naming and editor.naming is not None
                continue
            asked = False
            if key in (glfw.KEY_Q, glfw.KEY_ESCAPE):
                self.quit = True
            elif key == glfw.KEY_SPACE:
                self.control.set_paused(not self.control.paused.is_set())
            elif key == glfw.KEY_F:
                self.window.toggle_fullscreen()
            elif key == glfw.KEY_E:
                self.enter_editor()
            elif key == glfw.KEY_H:
                self.show_hud = not self.show_hud
            elif key in NUMBER_KEYS:
                self._number(NUMBER_KEYS[key])
            elif key == glfw.KEY_S:
                path = Path(f"coral-mfg-{file_utc(time.time())}.png").resolve()
                self.render()
                log.info("screenshot saved to %s", self.window.screenshot(path))

    def _edit_key(self, editor: ZoneEditor, key: int, mods: int) -> bool:
        """Keys that mean something else in edit mode; True when handled."""
        if editor.naming is not None:  # typing a name: every key is the name's
            if key in (glfw.KEY_ENTER, glfw.KEY_KP_ENTER):
                editor.commit_name()
            elif key == glfw.KEY_ESCAPE:
                editor.cancel_name()
            elif key == glfw.KEY_BACKSPACE:
                editor.backspace()
            return True
        if key == glfw.KEY_R:
            editor.rename()
        elif key in (glfw.KEY_ESCAPE, glfw.KEY_E):
            self.leave_editor()
        elif key == glfw.KEY_N:
            editor.new_zone()
        elif key == glfw.KEY_TAB:
            editor.next_zone()
        elif key == glfw.KEY_S and mods & glfw.MOD_CONTROL:
            try:
                editor.save()
            except UserError as exc:
                editor.message = str(exc)
                log.warning("%s", exc)
        else:
            return False
        return True

    def handle_mouse(self) -> None:
        while self.window.mouse:
            kind, button, x, y = self.window.mouse.popleft()
            editor = self.editor
            if editor is None:
                if kind == "press" and button == glfw.MOUSE_BUTTON_LEFT \
                        and len(self.cameras) > 1:
                    index = self.window.pane_at(x, y)
                    if index is not None:
                        self.focus(None if self.focused else self.cameras[index])
                continue
            self._dirty = True
            if kind == "press":
                editor.press(x, y, right=button == glfw.MOUSE_BUTTON_RIGHT)
            elif kind == "release":
                editor.release()
            else:
                editor.move(x, y)

    # --- drawing ---------------------------------------------------------------------------

    def render(self) -> None:
        snap = self.display.snapshot()
        for i, camera in enumerate(self.cameras):
            if camera in snap and self._shown.get(camera) != snap[camera][0]:
                self.window.set_pane(i, snap[camera][1].frame.image)
                self._shown[camera] = snap[camera][0]
        status = self.control.board.current
        editor = self.editor
        editing = ((editor.camera, tuple(z.outline for z in editor.store.zones if z.enabled))
                   if editor is not None else None)
        panes = {self.cameras[i]: origin for i, origin in self.window.origins().items()}
        layer = scene_for(
            snap, self.window.atlas, self.window.pane_size, panes, mask=self.settings.mask,
            panel=self.panel,
            status=lambda camera: _unseen(status.stream(camera)), editing=editing,
        )
        if editor is not None:
            editor.draw(layer)
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
                    now - last_hud > 0.5):
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


def _unseen(stream: StreamStatus) -> str | None:
    """Why a pane is dimmed: a camera that cannot see. Not a pause (the operator's own,
    the picture is what they want to look at) nor a file's end (the last frame stays, as
    the run's final picture); their strips say so."""
    return None if stream.state in (PAUSED, ENDED) else stream.reason
