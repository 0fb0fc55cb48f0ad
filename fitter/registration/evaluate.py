"""Accuracy protocols: the MICC Florence protocol (S3 §6.1.2, S4 §4.3) and the NME (S1 Eq. 10-11) as
reusable functions.

micc_error: crop the ground truth to `crop_mm` (95) around its nose tip; align the reconstruction to
it by ICP with isotropic scale (started from corresponding landmarks when given, else from the nose
tips); report the point-to-plane distance from each cropped ground-truth vertex to the reconstructed
surface (the distance to the closest surface point, i.e. along the surface normal there): mean, RMSE,
median, and optionally the symmetric version (the mean of both directions).

evaluate_mesh: the protocol for a reconstruction in a face model's topology against a scan, with the
scan's nose tip and alignment landmarks given or found by rendering it and detecting its landmarks.

nme: two meshes in the model's topology, rigidly aligned over the face region; the mean vertex error over
the outer interocular distance, and its parts along and across the viewing direction.
"""
import numpy as np

from ..detection import landmarks as lmk
from ..errors import InputError
from ..geometry.align import similarity_transform
from ..geometry.closest import MeshQuery
from ..geometry.mesh import submesh
from .scan import find_face_frame


def crop(V, F, center, radius):
    """Vertices of triangles F within `radius` of `center`, and the triangles among them (re-indexed)."""
    keep = np.linalg.norm(np.asarray(V) - np.asarray(center), axis=1) <= radius
    used = np.zeros(len(keep), bool)
    used[np.asarray(F).ravel()] = True
    keep &= used
    F_sub, old = submesh(np.asarray(F), keep)
    return np.asarray(V)[old], F_sub


ICP_SCALE_RANGE = 1.25  # from a landmark start, the scale may move by this factor either way


def icp_similarity(src, target: MeshQuery, s=1.0, R=None, t=None, iterations=60, keep=0.9, tol=1e-6,
                   scale_range=None):
    """Similarity (s, R, t) aligning points `src` (K, 3) onto the surface in `target`, by ICP:
    closest points, keep the closest `keep` fraction, Umeyama update, until the RMS change < tol.
    scale_range: the scale stays within this factor of its start (for a start that knows the scale, from
    landmarks: from a poor start a free scale shrinks the points onto a patch of the target, a small
    distance and a wrong alignment); None: free."""
    R = np.eye(3) if R is None else R
    t = np.zeros(3) if t is None else t
    s_lo, s_hi = (s / scale_range, s * scale_range) if scale_range else (0.0, np.inf)
    prev = np.inf
    for it in range(iterations):
        X = s * src @ R.T + t
        cp = target.closest(X)
        d = cp.distances
        sel = d <= np.quantile(d, keep)
        s, R, t = similarity_transform(src[sel], cp.points[sel])
        if not s_lo <= s <= s_hi:  # the best rotation and translation at the bounded scale
            s = float(np.clip(s, s_lo, s_hi))
            c_src, c_dst = src[sel].mean(0), cp.points[sel].mean(0)
            t = c_dst - s * R @ c_src
        rms = float(np.sqrt(np.mean(d[sel] ** 2)))
        if abs(prev - rms) < tol * max(rms, 1e-9):
            break
        prev = rms
    return s, R, t, it + 1


def micc_error(recon_V, recon_F, gt_V, gt_F, gt_nose, recon_nose, recon_points=None, gt_points=None,
               crop_mm=95.0, symmetric=False, recon_mask=None):
    """MICC-protocol error (mm) of a reconstruction against a ground-truth mesh.

    recon_points/gt_points: (K, 3) corresponding landmarks (K >= 3) to start the alignment;
    recon_mask: (N,) bool vertices of the reconstruction that are scored (its outer skin).
    """
    recon_V, gt_V = np.asarray(recon_V, float), np.asarray(gt_V, float)
    Vg, Fg = crop(gt_V, gt_F, gt_nose, crop_mm)
    if len(Fg) == 0:
        raise ValueError("the ground-truth crop around the nose tip is empty: check the nose tip and units")
    if recon_mask is not None:
        Fr, old = submesh(np.asarray(recon_F), np.asarray(recon_mask))
        Vr = recon_V[old]
    else:
        Vr, Fr = recon_V, np.asarray(recon_F)
    scale_range = None
    if recon_points is not None and gt_points is not None and len(recon_points) >= 3:
        s, R, t = similarity_transform(recon_points, gt_points)
        scale_range = ICP_SCALE_RANGE  # the landmarks gave the scale
    else:
        s, R, t = 1.0, np.eye(3), np.asarray(gt_nose, float) - np.asarray(recon_nose, float)
    gt_query = MeshQuery(Vg, Fg)
    # ICP on the reconstruction's vertices near its nose (the same crop, in the current alignment)
    near = np.linalg.norm((s * Vr @ R.T + t) - gt_nose, axis=1) <= crop_mm * 1.1
    s, R, t, iters = icp_similarity(Vr[near], gt_query, s, R, t, scale_range=scale_range)
    Va = s * Vr @ R.T + t
    recon_query = MeshQuery(Va, Fr)
    d = recon_query.closest(Vg).distances
    out = {"mean_mm": float(d.mean()), "rmse_mm": float(np.sqrt(np.mean(d ** 2))), "median_mm": float(np.median(d)),
           "gt_points": int(len(Vg)), "scale": float(s), "icp_iterations": int(iters), "crop_mm": float(crop_mm)}
    if symmetric:
        inside = np.linalg.norm(Va - gt_nose, axis=1) <= crop_mm
        d2 = gt_query.closest(Va[inside]).distances
        out["recon_to_gt_mean_mm"] = float(d2.mean())
        out["symmetric_mean_mm"] = float((d.mean() + d2.mean()) / 2)
    out["transform"] = {"scale": float(s), "R": R.tolist(), "t": t.tolist()}
    return out


def scan_reference(scan, gt_landmarks=None):
    """(nose tip (3,), the 5 alignment points (5, 3) or None) of a scan for the MICC protocol: from the
    given landmarks (1 point: the nose tip; 5: eyes, nose tip, mouth corners; mm), else found by rendering
    the scan and detecting its landmarks (fitter.registration.scan.find_face_frame: 26 renders, worth keeping)."""
    if gt_landmarks is not None:
        P = np.asarray(gt_landmarks, float).reshape(-1, 3)
        if len(P) not in (1, 5):
            raise InputError(f"{len(P)} ground-truth landmarks: give 1 point (nose tip) or 5 (eyes, nose tip, "
                             f"mouth corners)")
        return (P[0], None) if len(P) == 1 else (P[2], P)
    frame = find_face_frame(scan)
    return frame.nose_tip, lmk.five_points(lmk.to_68(np.nan_to_num(frame.landmarks)))


def evaluate_mesh(prepared, recon_V, scan, gt_landmarks=None, crop_mm=95.0, symmetric=False, keep_transform=False,
                  reference=None):
    """MICC-protocol error of a reconstruction against a ground-truth scan.

    prepared: the PreparedModel whose topology recon_V (N, 3, mm) has (its 68 landmark vertices give the
    reconstruction's nose tip and alignment points; its outer skin is scored); scan: a fitter.registration.scan.Scan in
    mm; gt_landmarks: None (found by rendering the scan and detecting its landmarks), a (1, 3) nose tip,
    or (5, 3) right eye, left eye, nose tip, right and left mouth corner, in mm; reference: the scan's
    `scan_reference` when the caller has it (then gt_landmarks is not used).
    Returns a dict: mean_mm, rmse_mm, median_mm, gt_points, scale (of the alignment: far from 1 when the
    two are not in the same units), with symmetric symmetric_mean_mm, with keep_transform "transform"
    (scale, R, t: reconstruction -> scan) and "nose_tip" (the scan's, mm)."""
    model = prepared.model
    recon_V = np.asarray(recon_V, float)
    if recon_V.shape != (model.n_vertices, 3):
        raise InputError(f"the reconstruction has {len(recon_V)} vertices, model '{model.name}' has "
                         f"{model.n_vertices}: give a mesh written by facefit with that model")
    ref = np.asarray(model.metadata["reference_landmarks_68"])
    nose, gt_pts = scan_reference(scan, gt_landmarks) if reference is None else reference
    R68 = recon_V[ref]
    res = micc_error(recon_V, model.faces, scan.V, scan.F, nose, R68[30],
                     lmk.five_points(R68) if gt_pts is not None else None, gt_pts, crop_mm=crop_mm,
                     symmetric=symmetric, recon_mask=model.region_mask("outer_skin"))
    if keep_transform:
        res["nose_tip"] = np.asarray(nose, float).tolist()
    else:
        res.pop("transform")
    return res


def nme(prepared, pred_V, true_V, view_dir=(0.0, 0.0, 1.0), region="face"):
    """Normalised mean error (S1 Eq. 10-11) of a reconstruction in the model's topology against the truth.

    pred_V, true_V: (N, 3) mm, the model's vertices; pred_V is rigidly aligned onto true_V over the
    `region` vertices (the face without neck and ears), then the per-vertex error e = v - v* is averaged
    over them and divided by d, the outer interocular distance of true_V (3D, iBUG 36-45).
    view_dir: the camera's viewing direction in pred_V's frame ((0, 0, 1) for a mesh in its camera's
    frame, as `facefit fit` writes mesh.obj); it is rotated with the alignment, and the error is split into
    its part along it, |e · ve|, and across it, sqrt(|e|² - (e · ve)²) (Eq. 11).
    Returns {"nme", "nme_parallel", "nme_orthogonal"} as fractions (× 100 for the papers' %), "iod_mm",
    "vertices"."""
    model = prepared.model
    pred_V, true_V = np.asarray(pred_V, float), np.asarray(true_V, float)
    for name, V in (("reconstruction", pred_V), ("ground truth", true_V)):
        if V.shape != (model.n_vertices, 3):
            raise InputError(f"the {name} has {len(V)} vertices, model '{model.name}' has {model.n_vertices}: NME "
                             f"compares two meshes in the model's topology")
    idx = np.asarray(model.regions[region])
    s, R, t = similarity_transform(pred_V[idx], true_V[idx], scale=False)
    e = (pred_V[idx] @ R.T + t) - true_V[idx]
    ref = np.asarray(model.metadata["reference_landmarks_68"])
    d = float(np.linalg.norm(true_V[ref[45]] - true_V[ref[36]]))
    ve = R @ (np.asarray(view_dir, float) / np.linalg.norm(view_dir))
    e3d = np.linalg.norm(e, axis=1)
    pal = np.abs(e @ ve)
    orh = np.sqrt(np.maximum(e3d ** 2 - pal ** 2, 0.0))
    return {"nme": float(e3d.mean() / d), "nme_parallel": float(pal.mean() / d),
            "nme_orthogonal": float(orh.mean() / d), "iod_mm": d, "vertices": int(len(idx))}
