"""The painted face: a plausible albedo for a face model that has none (ICT), by part.

Skin everywhere, darker brows and red lips painted around the model's own iBUG-68 landmark vertices,
part colours by region (sclera, sockets, teeth, ...), and an iris and pupil on each cornea. It is what
the landmark detector is shown on renders of the model (the embedding is measured on such renders,
the detector-bias render and the benchmarks' synthetic photos use it), and the part map is T-ICP's
texture model (one fitted colour per part, `fitter.registration.register`). `PreparedModel.painted_parts` and
`.painted_albedo` keep both once per model.
"""
import numpy as np

from .morphable import MorphableModel

SKIN = np.array([0.80, 0.60, 0.50])
PART_COLORS = {  # albedo of model parts (by region name) for the renders
    "sclera_left": (0.88, 0.86, 0.82), "sclera_right": (0.88, 0.86, 0.82),
    "iris_left": (0.22, 0.15, 0.10), "iris_right": (0.22, 0.15, 0.10),
    "eye_socket_left": (0.35, 0.22, 0.20), "eye_socket_right": (0.35, 0.22, 0.20),
    "mouth_socket": (0.30, 0.08, 0.08), "gums_and_tongue": (0.55, 0.20, 0.22), "teeth": (0.85, 0.82, 0.74),
}
BROW_COLOR = np.array([0.22, 0.14, 0.09])
LIP_COLOR = np.array([0.66, 0.30, 0.30])
# the standard render of the painted model (the embedding is measured on such renders)
RENDER_BACKGROUND = (0.25, 0.25, 0.28)
FOCAL_PX = 900.0
DISTANCE_MM = 650.0


def painted_parts(model: MorphableModel):
    """(N,) part index per vertex of the model's painting: 0 skin, 1 brows, 2 lips, 3 any other part
    (eyeballs, teeth, ... by region). Brows and lips are painted around the model's own 68 landmark
    vertices when it has them."""
    labels = np.zeros(model.n_vertices, np.int64)
    for part in PART_COLORS:
        if part in model.regions:
            labels[model.regions[part]] = 3
    ref = model.metadata.get("reference_landmarks_68")
    if ref:
        V = model.mean
        face = model.regions.get("face", np.arange(model.n_vertices))
        Pf = V[face]
        L = V[np.asarray(ref)]
        up = _up_axis(L)
        for brow in (L[17:22], L[22:27]):
            labels[face[_brow_band(Pf, brow, up)]] = 1
        labels[face[_inside_outline(Pf, L[48:60], L, up)]] = 2
    return labels


def paint_albedo(model: MorphableModel, labels=None):
    """(N, 3) per-vertex albedo of `painted_parts` (labels: its result when the caller has it): skin,
    brows, lips, part colours by region, and the iris and pupil on the corneas (0.3 s for ICT).
    `PreparedModel.painted_albedo` keeps it, read-only."""
    C = np.tile(SKIN, (model.n_vertices, 1))
    for part, col in PART_COLORS.items():
        if part in model.regions:
            C[model.regions[part]] = col
    for side in ("left", "right"):
        _paint_cornea(model, C, side)
    labels = painted_parts(model) if labels is None else labels
    C[labels == 1] = BROW_COLOR
    C[labels == 2] = LIP_COLOR
    return C


def _paint_cornea(model, C, side, iris_radius_mm=5.8, pupil_radius_mm=2.2):
    """Paint an iris and pupil (anatomical radii) onto the front of the eyeball's outer (sclera/cornea)
    mesh, around the model's forward axis: the iris geometry sits under a transparent cornea."""
    sclera = f"sclera_{side}"
    if sclera not in model.regions:
        return
    idx = model.regions[sclera]
    S = model.mean[idx]
    center = S.mean(0)
    ref = model.metadata.get("reference_landmarks_68")
    axis = _frame(model.mean[np.asarray(ref)], _up_axis(model.mean[np.asarray(ref)]))[2] if ref else np.array([0, 0, 1.0])
    rel = S - center
    along = rel @ axis
    r = np.linalg.norm(rel - np.outer(along, axis), axis=1)
    front = along > 0
    C[idx[front & (r < iris_radius_mm)]] = PART_COLORS.get(f"iris_{side}", (0.22, 0.15, 0.10))
    C[idx[front & (r < pupil_radius_mm)]] = (0.04, 0.03, 0.03)


def _up_axis(L68):
    """Unit vector from chin (iBUG 8) towards the brows (mean of 17..26), in model space."""
    up = L68[17:27].mean(0) - L68[8]
    return up / np.linalg.norm(up)


def _frame(L68, up):
    right = L68[45] - L68[36]
    right -= up * (right @ up)
    right /= np.linalg.norm(right)
    fwd = np.cross(right, up)
    return right, up, fwd


def _brow_band(P, brow, up, above_mm=1.0, below_mm=7.0, half_width_extra_mm=3.0):
    """Vertices within a band hanging from the brow polyline (iBUG brow points run along the top of
    the brow): from `above_mm` above it to `below_mm` below, tapering to 60 % at the outer end."""
    seg_a, seg_b = brow[:-1], brow[1:]
    d = seg_b - seg_a
    rel = P[:, None, :] - seg_a[None]  # (P, S, 3)
    t = np.clip(np.einsum("psk,sk->ps", rel, d) / (d * d).sum(1)[None], 0, 1)
    closest = seg_a[None] + t[..., None] * d[None]
    dist = np.linalg.norm(P[:, None, :] - closest, axis=2)
    s = np.argmin(dist, axis=1)
    c = closest[np.arange(len(P)), s]
    off = P - c
    vertical = off @ up
    horiz = np.linalg.norm(off - np.outer(vertical, up), axis=1)
    pos = (s + t[np.arange(len(P)), s]) / len(d)  # 0 inner/outer end .. 1 other end, along the brow
    outer_first = abs(brow[0][0]) > abs(brow[-1][0])
    taper = np.where(outer_first, 0.6 + 0.4 * pos, 1.0 - 0.4 * pos)
    return (vertical <= above_mm) & (vertical >= -below_mm * taper) & (horiz <= half_width_extra_mm)


def _inside_outline(P, outline, L68, up):
    """Vertices whose frontal projection falls inside a closed landmark outline and that lie near it in depth."""
    import matplotlib.path as mpath  # noqa: F401  (matplotlib ships with the dependency set)

    right, up, fwd = _frame(L68, up)
    to2 = lambda X: np.stack([X @ right, X @ up], axis=1)  # noqa: E731
    inside = mpath.Path(to2(outline)).contains_points(to2(P))
    depth_ok = (P @ fwd) >= (outline @ fwd).min() - 6.0
    return inside & depth_ok
