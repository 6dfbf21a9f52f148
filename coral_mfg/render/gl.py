"""Thin OpenGL 3.3 core helpers: programs from shader files, streamed buffers, textures."""

from __future__ import annotations

import ctypes
from importlib import resources

import numpy as np
import numpy.typing as npt
from OpenGL import GL


def _compile(kind: int, name: str) -> int:
    source = resources.files("coral_mfg").joinpath("shaders", name).read_text("utf-8")
    shader = GL.glCreateShader(kind)
    GL.glShaderSource(shader, source)
    GL.glCompileShader(shader)
    if not GL.glGetShaderiv(shader, GL.GL_COMPILE_STATUS):
        log = GL.glGetShaderInfoLog(shader)
        raise RuntimeError(f"shader {name} failed to compile: {log!r}")
    return int(shader)


class Program:
    """A linked shader program with the one uniform every shader takes: the content size."""

    def __init__(self, vertex: str, fragment: str) -> None:
        vs = _compile(GL.GL_VERTEX_SHADER, vertex)
        fs = _compile(GL.GL_FRAGMENT_SHADER, fragment)
        self.id = int(GL.glCreateProgram())
        GL.glAttachShader(self.id, vs)
        GL.glAttachShader(self.id, fs)
        GL.glLinkProgram(self.id)
        GL.glDeleteShader(vs)
        GL.glDeleteShader(fs)
        if not GL.glGetProgramiv(self.id, GL.GL_LINK_STATUS):
            raise RuntimeError(f"program {vertex}+{fragment}: {GL.glGetProgramInfoLog(self.id)!r}")

    def use(self, content_size: tuple[float, float]) -> None:
        GL.glUseProgram(self.id)
        GL.glUniform2f(GL.glGetUniformLocation(self.id, "content_size"), *content_size)


class StreamBuffer:
    """A VAO + VBO whose contents are replaced each frame (float32 attributes)."""

    def __init__(self, layout: list[int]) -> None:
        self.vao = GL.glGenVertexArrays(1)
        self.vbo = GL.glGenBuffers(1)
        self.stride = sum(layout)
        GL.glBindVertexArray(self.vao)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.vbo)
        offset = 0
        for location, size in enumerate(layout):
            GL.glEnableVertexAttribArray(location)
            GL.glVertexAttribPointer(location, size, GL.GL_FLOAT, GL.GL_FALSE, self.stride * 4,
                                     ctypes.c_void_p(offset * 4))
            offset += size
        GL.glBindVertexArray(0)

    def draw(self, vertices: npt.NDArray[np.float32]) -> None:
        if len(vertices) == 0:
            return
        data = np.ascontiguousarray(vertices, dtype=np.float32)
        GL.glBindVertexArray(self.vao)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.vbo)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, data.nbytes, data, GL.GL_STREAM_DRAW)
        GL.glDrawArrays(GL.GL_TRIANGLES, 0, len(data))
        GL.glBindVertexArray(0)


class Texture:
    """Allocated once per size; frames stream in with glTexSubImage2D."""

    def __init__(self, width: int, height: int, channels: int) -> None:
        self.size = (width, height)
        self.channels = channels
        self.id = GL.glGenTextures(1)
        internal, self.format = (GL.GL_RGB8, GL.GL_BGR) if channels == 3 else (GL.GL_R8, GL.GL_RED)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.id)
        for param, value in (
            (GL.GL_TEXTURE_MIN_FILTER, GL.GL_LINEAR),
            (GL.GL_TEXTURE_MAG_FILTER, GL.GL_LINEAR),
            (GL.GL_TEXTURE_WRAP_S, GL.GL_CLAMP_TO_EDGE),
            (GL.GL_TEXTURE_WRAP_T, GL.GL_CLAMP_TO_EDGE),
        ):
            GL.glTexParameteri(GL.GL_TEXTURE_2D, param, value)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, internal, width, height, 0, self.format,
                        GL.GL_UNSIGNED_BYTE, None)

    def upload(self, image: npt.NDArray[np.uint8]) -> None:
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.id)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        GL.glTexSubImage2D(GL.GL_TEXTURE_2D, 0, 0, 0, self.size[0], self.size[1], self.format,
                           GL.GL_UNSIGNED_BYTE, np.ascontiguousarray(image))

    def bind(self) -> None:
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.id)

    def delete(self) -> None:
        GL.glDeleteTextures([self.id])
