"""The glfw window: a pane per camera in a grid (or one camera enlarged), overlays, HUD
and keys, all on the main thread.

Each pane's texture is allocated once at the source resolution and updated
with glTexSubImage2D; the GPU scales it into the pane. Overlays are built from
the very result whose frame is shown, so boxes never trail their objects.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import glfw
import numpy as np
import numpy.typing as npt
from OpenGL import GL

from coral_mfg.core.errors import UserError
from coral_mfg.core.geometry import Rect, grid_shape, letterbox
from coral_mfg.core.results import FrameResult, ZoneOutline
from coral_mfg.outputs.base import SinkBase
from coral_mfg.outputs.overlay import build_overlay
from coral_mfg.outputs.panel import STRIP_HEIGHT, Panel
from coral_mfg.render.gl import Program, StreamBuffer, Texture
from coral_mfg.render.scene import Layer, overlay_layer, panel_layer, status_layer
from coral_mfg.render.text import GlyphAtlas

log = logging.getLogger(__name__)

#: The "key" of a character typed, in :attr:`Window.keys` (its codepoint as the mods).
CHAR = -1

IDLE_WAIT_S = 1 / 120


@dataclass
class DisplaySink(SinkBase):
    """The newest result of each stream, handed from the output thread to the window."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latest: dict[str, FrameResult] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)

    def write(self, result: FrameResult) -> None:
        with self.lock:
            s = result.stream
            self.latest[s] = result
            self.seq[s] = self.seq.get(s, 0) + 1

    def snapshot(self) -> dict[str, tuple[int, FrameResult]]:
        with self.lock:
            return {s: (self.seq[s], r) for s, r in self.latest.items()}


def cell_size(pane_size: tuple[int, int]) -> tuple[int, int]:
    """A camera's cell: its picture, and its strip under it."""
    return (pane_size[0], pane_size[1] + STRIP_HEIGHT)


def grid_content(pane_size: tuple[int, int], count: int) -> tuple[int, int]:
    """The content pixels of ``count`` cells in their grid."""
    cols, rows = grid_shape(count)
    w, h = cell_size(pane_size)
    return (cols * w, rows * h)


def pane_origins(pane_size: tuple[int, int], count: int) -> list[tuple[float, float]]:
    """The top-left corner of each of ``count`` cells in the grid, row by row."""
    cols, _ = grid_shape(count)
    w, h = cell_size(pane_size)
    return [(float((i % cols) * w), float((i // cols) * h)) for i in range(count)]


def check_display() -> None:
    """One line when there is no display to open a window on: checked before the models
    load, and again by the window."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("no display to open a window on (DISPLAY is not set); "
                        "run with --headless or start an X server")


class Window:
    """A GL 3.3 core window showing ``cameras`` panes of W x H content pixels in a grid
    (or one of them, enlarged), letterboxed when resized."""

    def __init__(
        self, pane_size: tuple[int, int], title: str = "coral-mfg", fullscreen: bool = False,
        visible: bool = True, cameras: int = 2,
    ) -> None:
        check_display()
        if not glfw.init():
            raise UserError(f"cannot open a window on display {os.environ.get('DISPLAY')}; "
                            "run with --headless")
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
        glfw.window_hint(glfw.VISIBLE, visible)
        self.pane_size = pane_size
        self.cameras = cameras
        self.content = grid_content(pane_size, cameras)
        #: the cameras shown (indices), in grid order: all, or one enlarged
        self.shown: tuple[int, ...] = tuple(range(cameras))
        monitor = glfw.get_primary_monitor() if fullscreen else None
        size = self.content
        if monitor is not None:
            mode = glfw.get_video_mode(monitor)
            size = (mode.size.width, mode.size.height)
        else:
            size, position = _fit_to_work_area(self.content)
        self.handle = glfw.create_window(size[0], size[1], title, monitor, None)
        if not self.handle:
            glfw.terminate()
            raise UserError("cannot create an OpenGL 3.3 window on this display; "
                            "run with --headless or update the graphics driver")
        if monitor is None and position is not None:
            glfw.set_window_pos(self.handle, *position)
        glfw.make_context_current(self.handle)
        glfw.swap_interval(1)
        glfw.set_window_aspect_ratio(self.handle, self.content[0], self.content[1])
        self.fullscreen = fullscreen
        self._windowed = (100, 100, *self.content)
        self.keys: deque[tuple[int, int]] = deque()
        self.mouse: deque[tuple[str, int, float, float]] = deque()
        glfw.set_key_callback(self.handle, self._on_key)
        glfw.set_char_callback(self.handle, self._on_char)
        glfw.set_mouse_button_callback(self.handle, self._on_mouse_button)
        glfw.set_cursor_pos_callback(self.handle, self._on_cursor)
        self.video = Program("textured.vert", "video.frag")
        self.text = Program("textured.vert", "text.frag")
        self.solid = Program("solid.vert", "solid.frag")
        self.textured_buf = StreamBuffer([2, 2, 4])
        self.solid_buf = StreamBuffer([2, 4])
        self.atlas = GlyphAtlas.build()
        h, w = self.atlas.image.shape
        self.atlas_tex = Texture(w, h, 1)
        self.atlas_tex.upload(self.atlas.image)
        self.panes: list[Texture | None] = [None] * cameras
        self.pictures: list[Rect] = [(0, 0, *pane_size)] * cameras
        self.gl_errors = 0
        self.frames_drawn = 0
        GL.glEnable(GL.GL_BLEND)
        GL.glBlendFunc(GL.GL_SRC_ALPHA, GL.GL_ONE_MINUS_SRC_ALPHA)

    def _on_key(self, _win: object, key: int, _scancode: int, action: int, mods: int) -> None:
        if action == glfw.PRESS:
            self.keys.append((key, mods))

    def _on_char(self, _win: object, codepoint: int) -> None:
        """Text typed (a zone's name), in order with the keys: ``(CHAR, codepoint)``."""
        self.keys.append((CHAR, codepoint))

    def _on_mouse_button(self, _win: object, button: int, action: int, _mods: int) -> None:
        x, y = glfw.get_cursor_pos(self.handle)
        kind = "press" if action == glfw.PRESS else "release"
        self.mouse.append((kind, button, *self.to_content(x, y)))

    def _on_cursor(self, _win: object, x: float, y: float) -> None:
        self.mouse.append(("move", -1, *self.to_content(x, y)))

    def to_content(self, x: float, y: float) -> tuple[float, float]:
        """Window (screen) coordinates to content pixels, through the letterbox."""
        ww, wh = glfw.get_window_size(self.handle)
        fw, fh = self.framebuffer_size()
        sx, sy = fw / max(ww, 1), fh / max(wh, 1)
        vx, vy, vw, vh = self.viewport()
        top = fh - vy - vh  # the viewport's top edge, from the top
        cx = (x * sx - vx) * self.content[0] / vw
        cy = (y * sy - top) * self.content[1] / vh
        return cx, cy

    def show(self, shown: tuple[int, ...]) -> None:
        """Show these cameras (indices) in their grid: all of them, or one enlarged."""
        self.shown = shown
        self.content = grid_content(self.pane_size, len(shown))

    def origins(self) -> dict[int, tuple[float, float]]:
        """Where each shown camera's pane starts, in content pixels."""
        return dict(zip(self.shown, pane_origins(self.pane_size, len(self.shown)),
                        strict=True))

    def pane_at(self, x: float, y: float) -> int | None:
        """The camera whose pane holds content point (x, y), if any."""
        w, h = cell_size(self.pane_size)
        for index, (ox, oy) in self.origins().items():
            if ox <= x < ox + w and oy <= y < oy + h:
                return index
        return None

    @property
    def should_close(self) -> bool:
        return bool(glfw.window_should_close(self.handle))

    def set_pane(self, index: int, image: npt.NDArray[np.uint8]) -> None:
        """Upload a frame at its own resolution; the texture is re-made only if that changes."""
        h, w = image.shape[:2]
        tex = self.panes[index]
        if tex is None or tex.size != (w, h):
            if tex is not None:
                tex.delete()
            tex = self.panes[index] = Texture(w, h, 3)
            self.pictures[index] = letterbox(self.pane_size, (w, h))
        tex.upload(image)

    def framebuffer_size(self) -> tuple[int, int]:
        w, h = glfw.get_framebuffer_size(self.handle)
        return int(w), int(h)

    def viewport(self) -> tuple[int, int, int, int]:
        return letterbox(self.framebuffer_size(), self.content)

    def draw(self, layer: Layer) -> None:
        fw, fh = self.framebuffer_size()
        GL.glViewport(0, 0, fw, fh)
        GL.glClearColor(0.0, 0.0, 0.0, 1.0)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT)
        GL.glViewport(*self.viewport())
        self.video.use(self.content)
        for i, (ox, oy) in self.origins().items():
            tex = self.panes[i]
            if tex is None:
                continue
            tex.bind()
            px, py, pw, ph = self.pictures[i]
            x0, y0 = ox + px, oy + py
            x1, y1 = x0 + pw, y0 + ph
            quad = np.array([
                (x0, y0, 0, 0), (x1, y0, 1, 0), (x1, y1, 1, 1),
                (x0, y0, 0, 0), (x1, y1, 1, 1), (x0, y1, 0, 1),
            ], np.float32)
            self.textured_buf.draw(np.hstack([quad, np.ones((6, 4), np.float32)]))
        solid, text = layer.arrays()
        self.solid.use(self.content)
        self.solid_buf.draw(solid)
        self.text.use(self.content)
        self.atlas_tex.bind()
        self.textured_buf.draw(text)
        err = GL.glGetError()
        while err != GL.GL_NO_ERROR:
            self.gl_errors += 1
            log.error("GL error 0x%x", err)
            err = GL.glGetError()
        self.frames_drawn += 1

    def swap(self) -> None:
        glfw.swap_buffers(self.handle)

    def read_pixels(self) -> npt.NDArray[np.uint8]:
        """The whole framebuffer as an RGB image, top row first."""
        w, h = self.framebuffer_size()
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        data = GL.glReadPixels(0, 0, w, h, GL.GL_RGB, GL.GL_UNSIGNED_BYTE)
        image = np.frombuffer(data, np.uint8).reshape(h, w, 3)
        return np.ascontiguousarray(image[::-1])

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), cv2.cvtColor(self.read_pixels(), cv2.COLOR_RGB2BGR)):
            raise UserError(f"cannot write screenshot {path}; pass a writable .png path")
        return path

    def toggle_fullscreen(self) -> None:
        if self.fullscreen:
            x, y, w, h = self._windowed
            glfw.set_window_monitor(self.handle, None, x, y, w, h, 0)  # type: ignore[arg-type]
        else:
            x, y = glfw.get_window_pos(self.handle)
            w, h = glfw.get_window_size(self.handle)
            self._windowed = (x, y, w, h)
            monitor = glfw.get_primary_monitor()
            mode = glfw.get_video_mode(monitor)
            glfw.set_window_monitor(self.handle, monitor, 0, 0, mode.size.width,
                                    mode.size.height, mode.refresh_rate)
        self.fullscreen = not self.fullscreen

    def close(self) -> None:
        if self.handle:
            glfw.destroy_window(self.handle)
            self.handle = None  # type: ignore[assignment]
        glfw.terminate()


def _fit_to_work_area(
    content: tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The window's size and place: the content size, shrunk (never stretched) to fit
    the primary monitor's work area, so it never runs off a small screen."""
    monitor = glfw.get_primary_monitor()
    if not monitor:
        return content, None
    x, y, w, h = glfw.get_monitor_workarea(monitor)
    if w <= 0 or h <= 0:
        return content, None
    scale = min(1.0, w / content[0], h / content[1])
    size = (max(1, int(content[0] * scale)), max(1, int(content[1] * scale)))
    return size, (x + (w - size[0]) // 2, y + (h - size[1]) // 2)


def scene_for(
    snapshot: dict[str, tuple[int, FrameResult]],
    atlas: GlyphAtlas,
    pane_size: tuple[int, int],
    panes: dict[str, tuple[float, float]],
    *,
    mask: float | None,
    panel: Callable[[str], Panel] | None,
    status: Callable[[str], str | None] | None = None,
    editing: tuple[str, tuple[ZoneOutline, ...]] | None = None,
) -> Layer:
    """Overlays of the shown results (each with the zones it was checked against, or, on
    the camera whose zones are being edited, those zones) and each camera's strip under
    its picture; ``panes`` says where each shown camera's cell starts."""
    layer = Layer()
    for camera, (dx, dy) in panes.items():
        if camera in snapshot:
            result = snapshot[camera][1]
            override = editing[1] if editing is not None and editing[0] == camera else None
            overlay_layer(build_overlay(result, mask, override), atlas, dx, layer, dy)
        message = status(camera) if status is not None else None
        if message:
            pane = (dx, dy, float(pane_size[0]), float(pane_size[1]))
            status_layer(message, atlas, pane, layer)
        if panel is not None:
            panel_layer(panel(camera), atlas,
                        (dx, dy, float(pane_size[0]), float(pane_size[1])), layer)
    return layer
