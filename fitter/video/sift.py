"""SIFT tracks: distinctive skin points matched between the kept views, one kind of track the model-space
refinement (`fitter.video.bundle`) adjusts the model to.

SIFT keypoints inside the face's landmark hull (`fitter.video.tracks.feature_mask`; the face crop only,
searched at twice the resolution for faces under UPSAMPLE_BELOW_PX interocular distance) are matched
between views whose yaws differ by at most MAX_YAW_GAP_DEG (Lowe's RATIO test, both ways), guided by the
fit (a match must land within `gate_iod` interocular distances of where the fit carries the point) and
one-to-one; matches chain into tracks (connected components; a track seen twice by one view is dropped),
each anchored on the surface where the view that sees it most squarely lifts it
(`fitter.video.tracks.lift`). An observation's position noise is FEATURE_SIGMA_PX, growing with the
keypoint's size past SIGMA_SIZE_PX. SIFT stops matching beyond ~35°, and on faces too small for its
pyramid: the flow tracks (`fitter.video.flow`) and the wide-baseline matches (`fitter.video.wide`) reach
those.
"""
import numpy as np

from ..detection import landmarks as lmk
from ..geometry.camera import yaw_of_rotation
from ..photo.texture import luma
from .tracks import Tracks, empty_tracks, face_area_triangles, feature_mask, lift, view_geometry

FEATURE_SIGMA_PX = 1.0      # a matched keypoint's position noise (px), for keypoints up to SIGMA_SIZE_PX across;
SIGMA_SIZE_PX = 6.0         # larger ones in proportion to their size (coarse blobs: shading more than skin marks)
MAX_YAW_GAP_DEG = 35.0      # views matched with each other
RATIO = 0.8                 # Lowe's ratio test
MAX_FEATURES = 1500
CROP_MARGIN_PX = 16         # keypoints are searched in the landmarks' box widened by this
UPSAMPLE_BELOW_PX = 120.0   # faces with a smaller interocular distance are searched at 2x


def detect_features(image, points):
    """SIFT keypoints (n, 2) px, their sizes (n,) px and descriptors (n, 128), in feature_mask. Small faces
    (interocular under UPSAMPLE_BELOW_PX) are searched at twice the resolution."""
    import cv2

    points = np.asarray(points, float)
    H, W = np.shape(image)[:2]
    x0, y0 = np.maximum(np.floor(points.min(0)).astype(int) - CROP_MARGIN_PX, 0)
    x1, y1 = np.minimum(np.ceil(points.max(0)).astype(int) + CROP_MARGIN_PX + 1, [W, H])
    crop = np.asarray(image)[y0:y1, x0:x1]                     # the face only: SIFT's pyramid is built on this
    gray = np.clip(luma(crop.astype(np.float32)), 0, 255).astype(np.uint8)
    mask = feature_mask(points - [x0, y0], gray.shape)
    scale = 2 if lmk.outer_interocular(points) < UPSAMPLE_BELOW_PX else 1
    if scale > 1:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        mask = cv2.resize(mask, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    sift = cv2.SIFT_create(nfeatures=MAX_FEATURES, contrastThreshold=0.02)
    kps, desc = sift.detectAndCompute(gray, mask)
    if desc is None:
        return np.zeros((0, 2)), np.zeros(0), np.zeros((0, 128), np.float32)
    uv = (np.array([k.pt for k in kps], float) + 0.5) / scale - 0.5 + [x0, y0]
    return uv, np.array([k.size for k in kps], float) / scale, desc


def build_tracks(prepared, views, identity, gate_iod, features=None, geometry=None):
    """Match the views' keypoints (see the module docstring) and chain them into Tracks. features: the
    views' detect_features results, geometry: their fitter.video.tracks.view_geometry, when made already."""
    import cv2
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    F = prepared.render_faces
    allowed = face_area_triangles(prepared)
    geometry = geometry if geometry is not None else view_geometry(prepared, views, identity)
    feats, lifted = [], []
    for k, v in enumerate(views):
        uv, size, desc = features[k] if features is not None else detect_features(v.image, v.landmarks)
        V = geometry[k].vertices
        tri, bary, cos = lift(V, F, v.camera, uv, allowed, radius_px=np.median(size) if len(size) else None,
                              render=geometry[k].render)
        keep = tri >= 0
        X = (bary[keep, :, None] * V[F[tri[keep]]]).sum(1)
        feats.append((uv[keep], desc[keep], size[keep]))
        lifted.append((tri[keep], bary[keep], cos[keep], X))
    offsets = np.cumsum([0] + [len(f[0]) for f in feats])
    yaws = np.array([yaw_of_rotation(v.camera.R) for v in views])
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    rows, cols = [], []
    for a in range(len(views)):
        for b in range(a + 1, len(views)):
            if abs(yaws[a] - yaws[b]) > MAX_YAW_GAP_DEG or len(feats[a][0]) < 2 or len(feats[b][0]) < 2:
                continue
            ab = _ratio_matches(matcher, feats[a][1], feats[b][1])
            ba = _ratio_matches(matcher, feats[b][1], feats[a][1])
            mutual = {(i, j) for i, j in ab} & {(i, j) for j, i in ba}
            if not mutual:
                continue
            i, j = np.array(sorted(mutual)).T
            gate_a = gate_iod * lmk.outer_interocular(views[a].landmarks)
            gate_b = gate_iod * lmk.outer_interocular(views[b].landmarks)
            ok = (np.linalg.norm(views[b].camera.project(lifted[a][3][i]) - feats[b][0][j], axis=1) < gate_b) & \
                 (np.linalg.norm(views[a].camera.project(lifted[b][3][j]) - feats[a][0][i], axis=1) < gate_a)
            rows.append(offsets[a] + i[ok])
            cols.append(offsets[b] + j[ok])
    n_nodes = int(offsets[-1])
    node_view = np.repeat(np.arange(len(views)), np.diff(offsets))
    if not rows:
        return empty_tracks()
    r, c = np.concatenate(rows), np.concatenate(cols)
    g = coo_matrix((np.ones(len(r)), (r, c)), shape=(n_nodes, n_nodes))
    _, label = connected_components(g, directed=False)
    matched = np.zeros(n_nodes, bool)
    matched[r] = matched[c] = True
    nodes = np.flatnonzero(matched)
    lab = label[nodes]
    order = np.lexsort((node_view[nodes], lab))
    nodes, lab = nodes[order], lab[order]
    # a track seen twice by one view is ambiguous: dropped
    same = (lab[1:] == lab[:-1]) & (node_view[nodes][1:] == node_view[nodes][:-1])
    bad_labels = np.unique(lab[1:][same])
    dup = np.isin(lab, bad_labels)
    nodes, lab = nodes[~dup], lab[~dup]
    uniq, track = np.unique(lab, return_inverse=True)
    tri_all = np.concatenate([lf[0] for lf in lifted])
    bary_all = np.concatenate([lf[1] for lf in lifted])
    cos_all = np.concatenate([lf[2] for lf in lifted])
    uv_all = np.concatenate([f[0] for f in feats])
    size_all = np.concatenate([f[2] for f in feats])
    # anchor: the observation whose view faces the point most squarely
    best = np.full(len(uniq), -1)
    order = np.argsort(cos_all[nodes])
    best[track[order]] = nodes[order]  # the last write (the largest cosine) wins
    sigma = FEATURE_SIGMA_PX * np.maximum(1.0, size_all[nodes] / SIGMA_SIZE_PX)
    return Tracks(node_view[nodes], track, uv_all[nodes], tri_all[best], bary_all[best], sigma)



def _ratio_matches(matcher, da, db):
    pairs = matcher.knnMatch(da, db, k=2)
    return [(m[0].queryIdx, m[0].trainIdx) for m in pairs
            if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
