#version 330 core
uniform vec2 content_size;
layout(location = 0) in vec2 position;
layout(location = 1) in vec4 color;
out vec4 v_color;

void main() {
    vec2 ndc = position / content_size * 2.0 - 1.0;
    gl_Position = vec4(ndc.x, -ndc.y, 0.0, 1.0);
    v_color = color;
}
