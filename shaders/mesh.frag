#version 330 core
// Perspective-correct interpolation makes f_bary the barycentrics of the 3D surface point, and
// f_pos.z its exact camera depth (mm).
uniform vec3 light_dir;   // unit vector towards the light, camera frame
uniform float ambient;
uniform float diffuse;
in vec3 f_pos;
in vec3 f_normal;
in vec3 f_color;
in vec3 f_bary;
layout(location = 0) out vec4 out_color;
layout(location = 1) out vec4 out_geom;    // barycentrics (3), camera z in mm
layout(location = 2) out int out_tri;      // triangle index + 1 (0 = no surface: the cleared value)
layout(location = 3) out vec4 out_normal;  // interpolated unit normal, camera frame; w = 1 on surface
void main() {
    vec3 n = normalize(f_normal);
    vec3 shade_n = dot(n, f_pos) > 0.0 ? -n : n;   // light the side that faces the viewer
    float lambert = ambient + diffuse * max(dot(shade_n, light_dir), 0.0);
    out_color = vec4(clamp(f_color * lambert, 0.0, 1.0), 1.0);
    out_geom = vec4(f_bary, f_pos.z);
    out_tri = gl_PrimitiveID + 1;
    out_normal = vec4(n, 1.0);
}
