#version 330 core
// Glyph atlas coverage in the red channel, tinted by the vertex colour.
uniform sampler2D image;
in vec2 v_uv;
in vec4 v_color;
out vec4 frag;

void main() {
    frag = vec4(v_color.rgb, v_color.a * texture(image, v_uv).r);
}
