#version 330 core
// A video frame, scaled by the sampler: no CPU resize.
uniform sampler2D image;
in vec2 v_uv;
in vec4 v_color;
out vec4 frag;

void main() {
    frag = vec4(texture(image, v_uv).rgb, 1.0) * v_color;
}
