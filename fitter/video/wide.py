"""Model-guided matches between views far apart (issue 22, part 2): the dense cue for photo pairs, where
SIFT descriptors (fitter.video.bundle) stop matching beyond ~35° because the skin's appearance changes
with the view.

For every pair of views (a, b) up to MAX_YAW_GAP_DEG apart, skin points are seeded in the more frontal
view a — Shi–Tomasi corners on the shading-filtered log-luminance of the face crop (fitter.video.flow's
`shading_filtered`), inside the skin mask — lifted onto a's fitted mesh (point X, normal n;
fitter.video.tracks.lift) and predicted in b: x_b⁰ = π_b(X), kept where b sees X (the project's depth
test, facing b). a's image is resampled into b's frame through X's tangent plane: each pixel y of a
P×P grid around x_b⁰ is cast onto the plane (X, n) from b's camera and projected into a — the
plane-induced homography, which undoes the foreshortening and turn between the views. The match is where,
within ±SEARCH_IOD interocular distances of x_b⁰ (the fit's error), b's patch correlates best with that
warped patch (normalised cross-correlation: each view's gain and bias removed), refined to sub-pixel by
a parabola through the peak's neighbours. A match is kept when its peak reaches MIN_NCC, stands out (the
best correlation PEAK_GAP_PX or more from it is at least PEAK_MARGIN lower) and is consistent: b's patch
at the match, warped back into a through the same plane, finds the seed again within BACK_PX.

Each match is a track of two observations, anchored at its seed's lift in the more frontal view
(`wide_tracks` returns fitter.video.tracks.Tracks).
"""
import numpy as np

from ..detection import landmarks as lmk
from ..geometry.camera import Camera, yaw_of_rotation
from ..geometry.mesh import face_normals
from ..geometry.render import depth_visible
from .flow import HIGH_PASS_IOD, face_crop_box, shading_filtered
from .tracks import Tracks, ViewGeometry, empty_tracks, face_area_triangles, feature_mask, lift, view_geometry

MAX_YAW_GAP_DEG = 75.0     # views farther apart than this are not matched
SEED_SPACING_IOD = 0.02    # seeds at least this far apart
MAX_SEEDS = 1500
SEED_QUALITY = 0.001
PATCH_IOD = 0.08           # the patch's side (× interocular distance of the view matched in), at least MIN_PATCH_PX
MIN_PATCH_PX = 9
SEARCH_IOD = 0.06          # the match is searched this far around the prediction (first round; then SEARCH_IOD / 2)
MIN_NCC = 0.7
PEAK_GAP_PX = 2            # the runner-up (another local maximum) is looked for this far from the peak ...
PEAK_MARGIN = 0.05         # ... and must correlate this much less
BACK_PX = 1.5              # the match warped back must find its seed within this (px)
MIN_FACING = 0.35          # b must see the point's surface at least this squarely (cosine)
WIDE_SIGMA_PX = 1.0        # a match's position noise (px)
CHUNK = 128                # seeds correlated at once (bounds the memory of the sliding windows)


def _filtered(view):
    """The view's face crop, shading-filtered (float32), and the crop's offset (x0, y0) in the image."""
    H, W = np.shape(view.image)[:2]
    box = face_crop_box([view.landmarks], (W, H))
    g = shading_filtered(view.image, box, 1, HIGH_PASS_IOD * lmk.outer_interocular(view.landmarks))
    return g.astype(np.float32), np.array(box[:2], float)


def plane_warp(cam_from: Camera, cam_to: Camera, X, n, centres, half):
    """Where the pixels of a (2 half + 1)² grid around each centre (k, 2) of cam_to's image come from in
    cam_from's image, through the plane of point X (k, 3) and normal n (k, 3) (model frame): (k, P, P, 2)
    px. Rays of cam_to are cut with the plane and the points projected by cam_from."""
    k = len(centres)
    g = np.arange(-half, half + 1, dtype=float)
    gx, gy = np.meshgrid(g, g)
    pix = centres[:, None, None, :] + np.stack([gx, gy], -1)[None]                      # (k, P, P, 2)
    rays = cam_to.rays(pix)
    Xc = cam_to.to_camera(X)                                                           # (k, 3)
    nc = n @ cam_to.R.T
    num = (nc * Xc).sum(1)[:, None, None]
    den = np.einsum("kc,kijc->kij", nc, rays)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = num / den
    P = s[..., None] * rays                                                             # cam_to frame
    Pm = (P - cam_to.t) @ cam_to.R                                                      # model frame
    out = cam_from.project(Pm.reshape(-1, 3)).reshape(k, *gx.shape, 2)
    out[~np.isfinite(out).all(-1) | ~(s > 0)] = -1e4
    return out


def _sample(image, offset, where):
    """Bilinear samples of a crop (its offset in the image) at image pixels `where` (..., 2); 0 outside."""
    import cv2

    shape = where.shape[:-1]
    m = (where.reshape(-1, 2) - offset).astype(np.float32)
    cols = 1024
    rows = -(-len(m) // cols)
    maps = np.full((rows * cols, 2), -1e4, np.float32)
    maps[:len(m)] = m
    out = cv2.remap(image, maps[:, 0].reshape(rows, cols), maps[:, 1].reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return out.reshape(-1)[:len(m)].reshape(shape)


def _ncc_search(templates, windows):
    """Normalised cross-correlation of templates (k, P, P) at every offset in windows (k, P + 2r, P + 2r):
    (k, 2r + 1, 2r + 1)."""
    from numpy.lib.stride_tricks import sliding_window_view

    P = templates.shape[1]
    t = templates - templates.mean((1, 2), keepdims=True)
    t /= np.maximum(np.linalg.norm(t.reshape(len(t), -1), axis=1), 1e-9)[:, None, None]
    out = []
    for c in range(0, len(t), CHUNK):
        w = sliding_window_view(windows[c:c + CHUNK], (P, P), axis=(1, 2))            # (c, S, S, P, P)
        dot = np.einsum("kij,kabij->kab", t[c:c + CHUNK], w)
        s1 = w.sum((3, 4))
        s2 = np.einsum("kabij,kabij->kab", w, w)
        var = np.maximum(s2 - s1 * s1 / (P * P), 1e-9)
        out.append(dot / np.sqrt(var))
    return np.concatenate(out) if out else np.zeros((0, 1, 1))


def _peaks(ncc):
    """Per search: the peak's sub-pixel offset (k, 2) from the window's centre, its NCC (k,) and whether it
    stands out from the runner-up PEAK_GAP_PX away (k,) and is not at the window's edge."""
    k, S, _ = ncc.shape
    r = S // 2
    flat = ncc.reshape(k, -1)
    best = np.nanargmax(np.nan_to_num(flat, nan=-2.0), axis=1)
    by, bx = np.divmod(best, S)
    peak = flat[np.arange(k), best]
    # the runner-up: the best other local maximum (3×3), two or more px from the peak
    from scipy.ndimage import maximum_filter

    filled = np.nan_to_num(ncc, nan=-2.0)
    local = filled >= maximum_filter(filled, size=(1, 3, 3), mode="constant", cval=-2.0)
    yy, xx = np.mgrid[0:S, 0:S]
    far = (np.abs(yy[None] - by[:, None, None]) >= PEAK_GAP_PX) | (np.abs(xx[None] - bx[:, None, None]) >= PEAK_GAP_PX)
    runner = np.where(far & local, filled, -2.0).reshape(k, -1).max(1)
    inner = (bx > 0) & (bx < S - 1) & (by > 0) & (by < S - 1)
    cx, cy = np.clip(bx, 1, S - 2), np.clip(by, 1, S - 2)
    idx = np.arange(k)

    def vertex(lo, mid, hi):
        d = lo - 2 * mid + hi
        return np.where(np.abs(d) > 1e-9, 0.5 * (lo - hi) / np.where(np.abs(d) > 1e-9, d, 1.0), 0.0)

    dx = vertex(ncc[idx, cy, cx - 1], ncc[idx, cy, cx], ncc[idx, cy, cx + 1])
    dy = vertex(ncc[idx, cy - 1, cx], ncc[idx, cy, cx], ncc[idx, cy + 1, cx])
    offset = np.column_stack([bx - r + np.clip(dx, -0.5, 0.5), by - r + np.clip(dy, -0.5, 0.5)])
    return offset, peak, inner & (peak - runner >= PEAK_MARGIN)


def match_pair(a, b, geom_a: ViewGeometry, geom_b: ViewGeometry, faces, allowed, search_iod, seeds=None,
                images=None, counts=None):
    """Model-guided matches of skin points seeded in view a in view b (BundleViews; geom_a, geom_b their
    meshes and renders, fitter.video.tracks.view_geometry; `faces` the triangles drawn, `allowed` (len(faces),) bool those points may lie on; search_iod: the
    search radius × b's interocular distance): (seed pixels in a (m, 2), their lift in a (tri (m,), bary
    (m, 3)), match pixels in b (m, 2)). seeds: a's `seed_points` when found already; images: both views'
    shading-filtered crops (`_filtered`); counts: a dict whose "candidates" (seeds that b sees) and
    "matched" are incremented."""
    ga, oa = images[0] if images else _filtered(a)
    gb, ob = images[1] if images else _filtered(b)
    uv, tri, bary, X, n = seeds if seeds is not None else seed_points(a, geom_a, faces, allowed, (ga, oa))
    empty = (np.zeros((0, 2)), np.zeros(0, int), np.zeros((0, 3)), np.zeros((0, 2)))
    if len(uv) == 0:
        return empty
    iod_b = lmk.outer_interocular(b.landmarks)
    # b must see the point, facing it
    depth = geom_b.render.depth
    Xb = b.camera.to_camera(X)
    pred = b.camera.project(X)
    facing = -((n @ b.camera.R.T) * Xb).sum(1) / np.linalg.norm(Xb, axis=1)
    seen = (facing > MIN_FACING) & depth_visible(pred, Xb[:, 2], depth, np.maximum(1.5, 0.004 * Xb[:, 2]))
    idx = np.flatnonzero(seen)
    if counts is not None:
        counts["candidates"] = counts.get("candidates", 0) + len(idx)
    if len(idx) == 0:
        return empty
    half = max(MIN_PATCH_PX, int(round(PATCH_IOD * iod_b))) // 2
    r = max(2, int(np.ceil(search_iod * iod_b)))
    centre = np.rint(pred[idx])
    # a's patch seen through the plane from b's grid around the prediction; b's window around it
    templates = _sample(ga, oa, plane_warp(a.camera, b.camera, X[idx], n[idx], centre, half))
    g = np.arange(-half - r, half + r + 1, dtype=float)
    wx, wy = np.meshgrid(g, g)
    windows = _sample(gb, ob, centre[:, None, None, :] + np.stack([wx, wy], -1)[None])
    offset, peak, distinct = _peaks(_ncc_search(templates, windows))
    ok = distinct & (peak >= MIN_NCC)
    idx, found = idx[ok], centre[ok] + offset[ok]
    if len(idx) == 0:
        return empty
    # back: b's patch at the match, through the same plane into a's grid around the seed
    back_r = max(2, int(np.ceil(BACK_PX)) + 1)
    seed_c = np.rint(uv[idx])
    templates = _sample(gb, ob, plane_warp(b.camera, a.camera, X[idx], n[idx], seed_c, half)
                        + (found - pred[idx])[:, None, None, :])
    g = np.arange(-half - back_r, half + back_r + 1, dtype=float)
    wx, wy = np.meshgrid(g, g)
    windows = _sample(ga, oa, seed_c[:, None, None, :] + np.stack([wx, wy], -1)[None])
    back, bpeak, _ = _peaks(_ncc_search(templates, windows))
    ok = (np.linalg.norm(seed_c + back - uv[idx], axis=1) < BACK_PX) & (bpeak >= MIN_NCC)
    idx, found = idx[ok], found[ok]
    if counts is not None:
        counts["matched"] = counts.get("matched", 0) + len(idx)
    return uv[idx], tri[idx], bary[idx], found


def seed_points(view, geometry: ViewGeometry, faces, allowed, image):
    """Skin points of a view (its mesh and render `geometry`; `image` its `_filtered` crop) to match from:
    (pixels (s, 2), lift tri (s,), bary (s, 3), model points X (s, 3), surface normals n (s, 3))."""
    import cv2

    g, off = image
    iod = lmk.outer_interocular(view.landmarks)
    mask = feature_mask(view.landmarks - off, g.shape)
    g8 = np.clip(g, 0, 255).astype(np.uint8)
    corners = cv2.goodFeaturesToTrack(g8, MAX_SEEDS, SEED_QUALITY, max(2.0, SEED_SPACING_IOD * iod), mask=mask,
                                      blockSize=7)
    if corners is None:
        return np.zeros((0, 2)), np.zeros(0, int), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3))
    uv = corners.reshape(-1, 2).astype(float) + off
    half = max(MIN_PATCH_PX, int(round(PATCH_IOD * iod))) // 2
    V = geometry.vertices
    tri, bary, _ = lift(V, faces, view.camera, uv, allowed, radius_px=half, render=geometry.render)
    ok = tri >= 0
    uv, tri, bary = uv[ok], tri[ok], bary[ok]
    X = (bary[:, :, None] * V[faces[tri]]).sum(1)
    n = face_normals(V, faces)[tri]
    return uv, tri, bary, X, n


def wide_tracks(prepared, views, identity, gate_iod, counts=None, geometry=None):
    """Tracks (fitter.video.tracks.Tracks) of model-guided matches (see the module docstring) between the
    views (BundleView list: the current fit) and identity; gate_iod: the search radius (× interocular
    distance), shrinking as the fit improves (fitter.video.bundle.GATE_IOD); counts: a dict given the
    candidates (seeds the other view sees) and matches, as `match_pair`; geometry: the views'
    view_geometry, when made already."""
    F = prepared.render_faces
    allowed = face_area_triangles(prepared)
    geometry = geometry if geometry is not None else view_geometry(prepared, views, identity)
    yaws = np.array([yaw_of_rotation(v.camera.R) for v in views])
    images = [_filtered(v) for v in views]
    search = min(SEARCH_IOD, gate_iod)
    view_l, track_l, uv_l, tri_l, bary_l = [], [], [], [], []
    seeds = {}
    n_tracks = 0
    for a in range(len(views)):
        for b in range(len(views)):
            if a == b or abs(yaws[a] - yaws[b]) > MAX_YAW_GAP_DEG:
                continue
            # seeded in the more frontal view of the pair (ties: the first) only: seeding both ways doubles the
            # tracks of skin-textured pairs and of untextured ones alike (the untextured MeshMonk at 30°:
            # 42 -> 97 tracks, and forced it got 0.38 mm worse), which leaves the gate no margin
            if abs(yaws[a]) > abs(yaws[b]) or (abs(yaws[a]) == abs(yaws[b]) and a > b):
                continue
            if a not in seeds:
                seeds[a] = seed_points(views[a], geometry[a], F, allowed, images[a])
            s_uv, s_tri, s_bary, found = match_pair(views[a], views[b], geometry[a], geometry[b], F, allowed,
                                                    search, seeds[a], (images[a], images[b]), counts)
            if len(found) == 0:
                continue
            t = n_tracks + np.arange(len(found))
            n_tracks += len(found)
            view_l += [np.full(len(found), a), np.full(len(found), b)]
            track_l += [t, t]
            uv_l += [s_uv, found]
            tri_l.append(s_tri)
            bary_l.append(s_bary)
    if not n_tracks:
        return empty_tracks()
    view, track, uv = np.concatenate(view_l), np.concatenate(track_l), np.concatenate(uv_l)
    order = np.lexsort((view, track))
    return Tracks(view[order], track[order], uv[order], np.concatenate(tri_l), np.concatenate(bary_l),
                  np.full(len(order), WIDE_SIGMA_PX))
