#version 330 core
// Passes each triangle through and attaches the barycentric coordinate of each corner and the
// triangle's index, so that one pass yields the index map (triangle id + barycentrics).
layout(triangles) in;
layout(triangle_strip, max_vertices = 3) out;
in vec3 g_pos[];
in vec3 g_normal[];
in vec3 g_color[];
out vec3 f_pos;
out vec3 f_normal;
out vec3 f_color;
out vec3 f_bary;
const vec3 corners[3] = vec3[3](vec3(1.0, 0.0, 0.0), vec3(0.0, 1.0, 0.0), vec3(0.0, 0.0, 1.0));
void main() {
    for (int k = 0; k < 3; ++k) {
        f_pos = g_pos[k];
        f_normal = g_normal[k];
        f_color = g_color[k];
        f_bary = corners[k];
        gl_PrimitiveID = gl_PrimitiveIDIn;
        gl_Position = gl_in[k].gl_Position;
        EmitVertex();
    }
    EndPrimitive();
}
