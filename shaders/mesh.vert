#version 330 core
// Vertices arrive already in the OpenCV camera frame (mm); `proj` maps them to clip space.
uniform mat4 proj;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 g_pos;
out vec3 g_normal;
out vec3 g_color;
void main() {
    g_pos = in_pos;
    g_normal = in_normal;
    g_color = in_color;
    gl_Position = proj * vec4(in_pos, 1.0);
}
