"""Skin points followed from frame to frame through a video (issue 22, part 1): the dense cue for small
faces, where SIFT matching between the kept views (fitter.video.bundle) finds too few matches.

Between the first and the last kept view every decoded frame of the person's track is read (a second
pass over the source; frames between kept views need tracking, not a fit). Skin points are seeded in
each kept view — Shi–Tomasi corners (cv2.goodFeaturesToTrack) inside the skin mask of
fitter.video.tracks.feature_mask, at least SEED_SPACING_IOD apart and away from the points still
followed — and followed through every frame with pyramidal Lucas–Kanade (cv2.calcOpticalFlowPyrLK),
each step checked forward–backward (a point tracked back must land within FB_MAX_PX of where it
started). The step is guided by the fitted model's motion: each seed is lifted onto the fitted mesh of
its kept view (X, model frame) and projected through a camera per frame — a PnP pose of the joint
fit's landmarks at every scanned frame (fitter.photo.coarse.initial_pose's SQPnP, the kept views' focal),
interpolated between scanned frames — so

    x_(i+1)⁰ = x_i + π_(i+1)(X) − π_i(X)      (Lucas–Kanade's start, cv2.OPTFLOW_USE_INITIAL_FLOW)

and a step that departs from that predicted motion by more than GUIDE_GATE_IOD (× interocular distance)
is a jump to another patch: the point is dropped. Lucas–Kanade runs on the crop's log-luminance minus
its blur (HIGH_PASS_IOD): the smooth shading, which turns with the head under a fixed light, would drag
the points along the surface. Motion-blurred frames (sharpness under BLUR_RATIO × the median of the
RECENT_FRAMES before) are stepped over. Where a followed point reaches a kept view it is aligned once more
directly on the previous kept view's image (one step's error instead of one per frame) and observed
there: `follow_skin_points` returns FlowObservations (track, kept view, pixel).

`flow_tracks` turns them into fitter.video.tracks.Tracks for the current fit: each observation lifted
onto its view's mesh (fitter.video.tracks.lift: face area, facing, off depth edges); the anchor is the
observation whose view sees the point most squarely; an observation whose pixel lies farther than
gate_iod interocular distances from where the anchor's surface point projects in its view is dropped (as
SIFT matches are gated); a track keeps at least two observations.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from ..detection import landmarks as lmk
from ..geometry.camera import Camera
from ..photo.texture import luma
from .tracks import Tracks, empty_tracks, face_area_triangles, feature_mask, lift, view_geometry

SEED_SPACING_IOD = 0.05    # seeds at least this far apart (× interocular distance)
MAX_SEEDS = 800            # per kept view
SEED_QUALITY = 0.01        # Shi–Tomasi's corner quality relative to the crop's best corner
FB_MAX_PX = 0.5            # forward–backward error allowed per step (original pixels)
GUIDE_GATE_IOD = 0.05      # a step may depart from the model's predicted motion by this much
WINDOW_PX = 21             # Lucas–Kanade window (working pixels) and pyramid levels
LEVELS = 3
UPSAMPLE_BELOW_PX = 120.0  # faces with a smaller interocular distance are followed at 2x
MARGIN_IOD = 0.6           # the crop followed: the landmarks' boxes over the span, widened by this
HIGH_PASS_IOD = 0.15       # the shading filtered out: log-luminance minus its blur of σ this × interocular distance
HIGH_PASS_GAIN = 400.0     # grey levels per unit of high-passed log-luminance (±0.3: ±120 levels)
REFINE_MAX_PX = 2.0        # a direct step between kept views may move a followed point this far (working px)
FLOW_SIGMA_IOD = 0.015     # an observation's position noise (× interocular distance, at least FLOW_MIN_SIGMA_PX):
FLOW_MIN_SIGMA_PX = 1.0    # what is followed drifts (on the skin-textured mini MICC: 3 px at a 150 px interocular
                           # distance measured better than 1 or 2 px, 1 px at 70 px better than 2)
MAX_SIZE_RATIO = 1.5       # a scanned frame whose face is this much larger or smaller than the kept views' is ignored
POSE_MARGIN_FRAMES = 8     # scanned frames this close outside the span still give the guide its poses
MAX_SPAN_FRAMES = 3000     # a span of more frames than this between the first and last kept view is not followed
RECENT_FRAMES = 25         # a frame is blurred when its sharpness is under BLUR_RATIO × the median of this many
BLUR_RATIO = 0.8           # frames up to it (mini MICC: its motion-blurred frames 0.18-0.65 × the median, the
                           # others at least 0.92 ×, from 260 to 80 px faces)


@dataclass
class FlowObservations:
    """Followed skin points where they pass the kept views."""

    track: np.ndarray   # (M,) track id
    view: np.ndarray    # (M,) index into the kept views
    uv: np.ndarray      # (M, 2) px in that view's frame
    info: dict = field(default_factory=dict)

    @property
    def n_tracks(self):
        return len(np.unique(self.track))


def empty_observations(info=None):
    return FlowObservations(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 2)), info or {})


# --- the model's motion between frames ---------------------------------------------------------------
def frame_poses(prepared, identity, expression, scanned, K):
    """Rotation vectors (n, 3) and translations (n, 3) mm, one per scanned frame ((frame index, (478, 2)
    landmarks) list in time order), from PnP of the fitted face's inner landmarks (camera K)."""
    import cv2

    from ..photo.coarse import region_weights

    lb = prepared.landmark_basis
    inner = np.setdiff1d(np.arange(478), lb.contour)
    coeffs = np.concatenate([identity, expression])
    X = lb.mean[inner] + lb.basis[inner] @ coeffs
    w = (region_weights() * prepared.require_embedding().weights)[inner]
    X, sel = X[w > 0], inner[w > 0]
    rvecs, tvecs = [], []
    for _, points in scanned:
        ok, rvec, tvec = cv2.solvePnP(X.astype(np.float64), np.asarray(points, np.float64)[sel], K, None,
                                      flags=cv2.SOLVEPNP_SQPNP)
        if not ok or tvec[2, 0] <= 0:
            rvec, tvec = (rvecs[-1], tvecs[-1]) if rvecs else (np.zeros(3), np.array([0.0, 0.0, 500.0]))
        rvecs.append(np.ravel(rvec))
        tvecs.append(np.ravel(tvec))
    return np.array(rvecs), np.array(tvecs)


def interpolated_camera(i, scanned_ids, rvecs, tvecs, K, size):
    """The camera of frame i: the scanned frames' poses (frame_poses) linearly interpolated (rotation
    vectors and translations; neighbouring scanned frames are a few frames apart), held beyond the ends."""
    import cv2

    s = np.asarray(scanned_ids, float)
    r = np.array([np.interp(i, s, rvecs[:, j]) for j in range(3)])
    t = np.array([np.interp(i, s, tvecs[:, j]) for j in range(3)])
    return Camera(K, cv2.Rodrigues(r)[0], t, *size)


# --- following ---------------------------------------------------------------------------------------
def face_crop_box(landmark_sets, image_size):
    """(x0, y0, x1, y1) px: the box of the landmarks ((478, 2) per frame) over the frames, widened by MARGIN_IOD
    interocular distances (their median) and clipped to the image (W, H)."""
    pts = np.concatenate(landmark_sets)
    iod = float(np.median([lmk.outer_interocular(p) for p in landmark_sets]))
    m = MARGIN_IOD * iod
    W, H = image_size
    x0, y0 = np.maximum(np.floor(pts.min(0) - m).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0) + m).astype(int) + 1, [W, H])
    return int(x0), int(y0), int(x1), int(y1)


def shading_filtered(image, box, scale, sigma_px):
    """The crop's luminance, resampled by `scale`, as log-luminance minus its Gaussian blur (σ sigma_px,
    working px): albedo × shading becomes log albedo + log shading, and the slowly varying shading — which
    turns with the head under a fixed light and drags Lucas–Kanade along the surface — is filtered out.
    uint8 around 128 (HIGH_PASS_GAIN grey levels per unit of log-luminance)."""
    import cv2

    x0, y0, x1, y1 = box
    g = luma(np.asarray(image)[y0:y1, x0:x1].astype(np.float32))
    if scale > 1:
        g = cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    if sigma_px <= 0:
        return np.clip(g, 0, 255).astype(np.uint8)
    lg = np.log(np.clip(g, 1.0, 255.0) / 255.0)
    # the wide blur on a quarter-size copy (a Gaussian of σ ≥ 4 px loses nothing there), brought back up
    k = int(max(1, min(4, sigma_px // 4)))
    h, w = lg.shape
    small = cv2.resize(lg, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
    low = cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma_px / k), (w, h), interpolation=cv2.INTER_LINEAR)
    hp = lg - low
    return np.clip(128.0 + HIGH_PASS_GAIN * hp, 0, 255).astype(np.uint8)


def _sharpness(grey):
    """Variance of the Laplacian of the crop smoothed by σ 1 px (the smoothing keeps sensor noise and JPEG
    blocks from passing for detail)."""
    import cv2

    g = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
    return float(cv2.Laplacian(g, cv2.CV_32F).var())


def follow_skin_points(prepared, frames, kept, scanned, identity):
    """Follow skin points through `frames` (an iterator of fitter.video.frames.Frame, every frame, in
    order) — see the module docstring. kept: per kept view (frame index, BundleView) in time order;
    scanned: (frame index, (478, 2) landmarks) of every scanned frame of the person, in time order.
    Returns FlowObservations (view = index into `kept`)."""
    import cv2

    t_start = time.perf_counter()
    model, F = prepared.model, prepared.render_faces
    allowed = face_area_triangles(prepared)
    kept_index = {int(i): k for k, (i, _) in enumerate(kept)}
    first, last = min(kept_index), max(kept_index)
    if last - first > MAX_SPAN_FRAMES:
        return empty_observations({"frames_followed": 0,
                                   "reason": f"span of {last - first} frames > {MAX_SPAN_FRAMES}"})
    views = [v for _, v in kept]
    # the scanned frames around the span whose face is the kept views' size (a detector's failure — a "face"
    # several times larger, on the background — would steer the guide and blow up the crop)
    face_size = float(np.median([np.ptp(v.landmarks, axis=0).max() for v in views]))
    scanned = [(int(i), np.asarray(p, float)) for i, p in scanned
               if first - POSE_MARGIN_FRAMES <= i <= last + POSE_MARGIN_FRAMES
               and 1 / MAX_SIZE_RATIO < np.ptp(p, axis=0).max() / face_size < MAX_SIZE_RATIO] or \
        [(int(i), v.landmarks) for i, v in kept]
    size = (views[0].camera.width, views[0].camera.height)
    K = views[0].camera.K
    expression = np.median([v.expression for v in views], axis=0)
    rvecs, tvecs = frame_poses(prepared, identity, expression, scanned, K)
    box = face_crop_box([p for _, p in scanned], size)
    iod = float(np.median([lmk.outer_interocular(v.landmarks) for v in views]))
    scale = 2 if iod < UPSAMPLE_BELOW_PX else 1
    offset = np.array(box[:2], float)
    to_work = lambda uv: (uv - offset + 0.5) * scale - 0.5            # noqa: E731  original px -> crop px
    to_orig = lambda w: (w + 0.5) / scale - 0.5 + offset               # noqa: E731
    lk = dict(winSize=(WINDOW_PX, WINDOW_PX), maxLevel=LEVELS,
              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01))
    spacing = max(2.0, SEED_SPACING_IOD * iod * scale)
    guide_gate = GUIDE_GATE_IOD * iod
    scanned_ids = [i for i, _ in scanned]

    pts = np.zeros((0, 2), np.float32)         # live points, working px
    X = np.zeros((0, 3))                       # their model points (lifted at the seed view)
    ids = np.zeros(0, int)
    next_id = 0
    obs_t, obs_v, obs_uv = [], [], []
    counts = {"seeded": 0, "lost_flow": 0, "lost_fb": 0, "lost_guide": 0}
    prev, last_kept, recent, followed, skipped, undecoded = None, None, [], 0, 0, 0
    for frame in frames:
        i = frame.index
        if i < first:
            continue
        if i > last:
            break
        if frame.image is None:  # a frame that could not be decoded: stepped over like a blurred one
            undecoded += 1
            continue
        g = shading_filtered(frame.image, box, scale, HIGH_PASS_IOD * iod * scale)
        sharpness = _sharpness(g)
        recent = (recent + [sharpness])[-RECENT_FRAMES:]
        if i not in kept_index and sharpness < BLUR_RATIO * float(np.median(recent)):
            skipped += 1  # motion-blurred: stepped over
            continue
        followed += 1
        cam = interpolated_camera(i, scanned_ids, rvecs, tvecs, K, size)
        if prev is not None and len(pts):
            cam_prev, gp = prev
            pred = cam.project(X) - cam_prev.project(X)
            start = (pts + pred * scale).astype(np.float32)
            nxt, st, _ = cv2.calcOpticalFlowPyrLK(gp, g, pts, start.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(g, gp, nxt, pts.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
            ok = (st.ravel() == 1) & (st2.ravel() == 1)
            fb = np.linalg.norm(back - pts, axis=1) / scale
            dev = np.linalg.norm(nxt - start, axis=1) / scale
            inside = (nxt[:, 0] >= 0) & (nxt[:, 1] >= 0) & (nxt[:, 0] <= g.shape[1] - 1) & (nxt[:, 1] <= g.shape[0] - 1)
            good_fb, good_guide = fb < FB_MAX_PX, dev < guide_gate
            counts["lost_flow"] += int((~(ok & inside)).sum())
            counts["lost_fb"] += int((ok & inside & ~good_fb).sum())
            counts["lost_guide"] += int((ok & inside & good_fb & ~good_guide).sum())
            keep = ok & inside & good_fb & good_guide
            pts, X, ids = nxt[keep], X[keep], ids[keep]
        if i in kept_index:
            k = kept_index[i]
            v = views[k]
            if len(pts) and last_kept is not None:
                pts = _refine_from_kept(last_kept, g, pts, ids, lk)
            if len(pts):
                obs_t.append(ids), obs_v.append(np.full(len(ids), k)), obs_uv.append(to_orig(pts.astype(float)))
            # new seeds on the skin, away from the points followed already
            mask = feature_mask(to_work(v.landmarks), g.shape)
            if len(pts):
                taken = np.zeros_like(mask)
                px = np.clip(np.rint(pts).astype(int), 0, [g.shape[1] - 1, g.shape[0] - 1])
                taken[px[:, 1], px[:, 0]] = 1
                r = int(np.ceil(spacing))
                taken = cv2.dilate(taken, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
                mask[taken > 0] = 0
            corners = cv2.goodFeaturesToTrack(g, MAX_SEEDS, SEED_QUALITY, spacing, mask=mask, blockSize=7)
            if corners is not None:
                seeds = corners.reshape(-1, 2).astype(np.float32)
                Vk = model.shape(identity, v.expression)
                tri, bary, _ = lift(Vk, F, v.camera, to_orig(seeds.astype(float)), allowed,
                                    radius_px=WINDOW_PX / (2.0 * scale))
                good = tri >= 0
                Xs = (bary[good, :, None] * Vk[F[tri[good]]]).sum(1)
                # the guide's frame: seeds observed now; their model points carried by the fit's pose here
                # into the PnP pose's frame (both project the same pixels)
                Xs = _into_pnp_frame(Xs, v.camera, cam)
                n = int(good.sum())
                new_ids = np.arange(next_id, next_id + n)
                next_id += n
                counts["seeded"] += n
                obs_t.append(new_ids), obs_v.append(np.full(n, k)), obs_uv.append(to_orig(seeds[good].astype(float)))
                pts = np.concatenate([pts, seeds[good]])
                X = np.concatenate([X, Xs])
                ids = np.concatenate([ids, new_ids])
            last_kept = (g, pts.copy(), ids.copy())
        prev = (cam, g)
    info = {"frames_followed": followed, "frames_skipped_blurred": skipped, "frames_undecodable": undecoded,
            "scale": scale,
            **counts, "seconds": round(time.perf_counter() - t_start, 3)}
    if not obs_t:
        return empty_observations(info)
    return FlowObservations(np.concatenate(obs_t), np.concatenate(obs_v), np.concatenate(obs_uv), info)


def _refine_from_kept(last_kept, grey, pts, ids, lk):
    """The followed points' positions in this kept view (working px), each aligned once more directly on
    the previous kept view's image (where it was observed): frame-to-frame following adds each step's
    error, a direct step adds one. A point whose direct step fails its forward–backward check or lands
    more than REFINE_MAX_PX from where it was followed keeps the followed position."""
    import cv2

    g0, p0, i0 = last_kept
    where = {int(t): j for j, t in enumerate(i0)}
    src = np.array([where.get(int(t), -1) for t in ids])
    have = np.flatnonzero(src >= 0)
    if len(have) == 0:
        return pts
    a = p0[src[have]]
    b, st, _ = cv2.calcOpticalFlowPyrLK(g0, grey, a, pts[have].copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(grey, g0, b, a.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    ok = (st.ravel() == 1) & (st2.ravel() == 1) & (np.linalg.norm(back - a, axis=1) < FB_MAX_PX) & \
         (np.linalg.norm(b - pts[have], axis=1) < REFINE_MAX_PX)
    out = pts.copy()
    out[have[ok]] = b[ok]
    return out


def _into_pnp_frame(X, fit_camera: Camera, pnp_camera: Camera):
    """Model points X (n, 3) seen by the fit's camera, moved rigidly so that the PnP camera sees them where
    the fit's camera does (the guide uses PnP poses in every frame; only their changes matter)."""
    Xc = fit_camera.to_camera(X)
    return (Xc - pnp_camera.t) @ pnp_camera.R


# --- tracks for the adjustment -----------------------------------------------------------------------
def flow_tracks(prepared, views, identity, observations: FlowObservations, gate_iod, geometry=None):
    """fitter.video.tracks.Tracks from followed points (see the module docstring) for the views
    (BundleView list, the current fit) and identity; geometry: their view_geometry, when made already."""
    if len(observations.track) == 0:
        return empty_tracks()
    F = prepared.render_faces
    allowed = face_area_triangles(prepared)
    geometry = geometry if geometry is not None else view_geometry(prepared, views, identity)
    meshes = [g.vertices for g in geometry]
    M = len(observations.track)
    tri, bary, cos = -np.ones(M, int), np.zeros((M, 3)), np.zeros(M)
    X = np.zeros((M, 3))
    for k, v in enumerate(views):
        sel = np.flatnonzero(observations.view == k)
        if len(sel) == 0:
            continue
        t, b, c = lift(meshes[k], F, v.camera, observations.uv[sel], allowed, radius_px=WINDOW_PX / 4.0,
                       render=geometry[k].render)
        tri[sel], bary[sel], cos[sel] = t, b, c
        ok = t >= 0
        X[sel[ok]] = (b[ok, :, None] * meshes[k][F[t[ok]]]).sum(1)
    valid = tri >= 0
    idx = np.flatnonzero(valid)
    _, track = np.unique(observations.track[idx], return_inverse=True)
    T = int(track.max()) + 1 if len(idx) else 0
    if T == 0:
        return empty_tracks()
    best = np.full(T, -1)
    order = np.argsort(cos[idx])
    best[track[order]] = idx[order]                      # the largest cosine wins
    # gate: each observation against where its track's anchor point projects in its view
    view = observations.view[idx]
    proj = np.zeros((len(idx), 2))
    for k, v in enumerate(views):
        s = np.flatnonzero(view == k)
        if len(s):
            proj[s] = v.camera.project(X[best[track[s]]])
    gates = np.array([gate_iod * lmk.outer_interocular(v.landmarks) for v in views])[view]
    ok = np.linalg.norm(proj - observations.uv[idx], axis=1) < gates
    idx, track, view = idx[ok], track[ok], view[ok]
    counts = np.bincount(track, minlength=T)
    # one observation per view per track (a track passes a kept view once); at least two views
    keep = counts[track] >= 2
    idx, track, view = idx[keep], track[keep], view[keep]
    used, new = np.unique(track, return_inverse=True)
    anchors = best[used]
    order = np.lexsort((view, new))
    idx, new, view = idx[order], new[order], view[order]
    iods = np.array([lmk.outer_interocular(v.landmarks) for v in views])
    sigma = np.maximum(FLOW_MIN_SIGMA_PX, FLOW_SIGMA_IOD * iods)
    return Tracks(view, new, observations.uv[idx], tri[anchors], bary[anchors], sigma[view])
