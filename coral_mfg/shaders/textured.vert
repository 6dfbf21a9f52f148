#version 330 core
// Positions arrive in content pixels (origin top-left); map them to clip space.
uniform vec2 content_size;
layout(location = 0) in vec2 position;
layout(location = 1) in vec2 uv;
layout(location = 2) in vec4 color;
out vec2 v_uv;
out vec4 v_color;

void main() {
    vec2 ndc = position / content_size * 2.0 - 1.0;
    gl_Position = vec4(ndc.x, -ndc.y, 0.0, 1.0);
    v_uv = uv;
    v_color = color;
}
