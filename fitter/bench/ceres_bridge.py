"""The fine stage's Ceres bridge against one written with pyceres' public API only (issue 26).

The stage's bridge (fitter.photo.fine.ceres_tiles) evaluates every tile at once when Ceres starts a pass and
reads Ceres's state and Jacobian layout through memory addresses, because pyceres 2.6 exposes neither
Problem::Options::evaluation_callback nor a way to see the whole evaluation point. With the public API
alone, each tile's cost function sees only its own parameters, so each evaluates its own 4×4 pixels
(the same equations and numpy code, restricted to the tile) and copies its Jacobian block by block. Both
solve the same problem here, a lit sphere (the scene of tests/test_fine.py) at a 256² crop's size, from
the same start with the same Ceres options; the bench reports their times and that they agree.
"""
import time

import numpy as np

from ..geometry.camera import Camera, intrinsics
from ..photo.fine import ceres_tiles
from ..photo.fine.geometry import forward_normals, sh_gradient
from ..photo.texture import LUMA, sh_basis


def lit_sphere(size, radius=50.0, distance=250.0):
    """(camera, depth (size, size) mm, hit mask, SH light (9, 3), albedo, image) of a sphere filling about
    the middle half of a size × size image."""
    camera = Camera(intrinsics(2.3 * size, size, size), width=size, height=size)
    rn = camera.image_rays()
    rn = rn / np.linalg.norm(rn, axis=2, keepdims=True)
    C = np.array([0.0, 0.0, distance])
    b = (rn * C).sum(2)
    disc = b * b - (C @ C - radius ** 2)
    hit = disc > 0
    X = rn * (b - np.sqrt(np.maximum(disc, 0)))[..., None]
    depth = np.where(hit, X[..., 2], 0.0)
    light = np.zeros((9, 3))
    light[0], light[1], light[2], light[3] = [1.0, 0.9, 0.8], -0.25, -0.5, 0.3
    albedo = np.full((size, size, 3), 0.6)
    image = albedo * (sh_basis(((X - C) / radius).reshape(-1, 3)) @ light).reshape(size, size, 3)
    return camera, depth, hit, light, albedo, image


class _TileSubset:
    """What one tile's own evaluation needs: its residual pixels (positions in the problem's pixel list),
    where their residuals and depth-dependent Jacobian entries go in the tile's rows and blocks."""

    def __init__(self, p, t):
        self.sel = np.flatnonzero(p.pix_tile == t)
        self.params = p.upix[p.tile_params[t]]  # flat pixel index of each parameter
        R = p.R
        self.rows = [p.res_at[k][self.sel] - t * R for k in range(p.ROWS)]
        self.ph = []  # per neighbour (self, right, down): (pixels, their rows in the tile, Jacobian positions)
        for which in range(3):
            sel = self.sel[(p.cols[self.sel, which] >= 0) & p.ph[self.sel]]
            self.ph.append((sel, np.searchsorted(self.sel, sel), p.cols[sel, which] * R + p.pix_slot[sel] * p.ROWS))


def evaluate_tile(p, s: _TileSubset, z_tile, t):
    """(residuals (R,), Jacobian (n_params, R)) of tile t at its parameters' depths z_tile, by the stage's
    equations (DepthProblem.compute) on the tile's pixels only."""
    zf = p.z.reshape(-1)
    zf[s.params] = z_tile
    l1, l2, l3, l4 = p.lam
    sel = s.sel
    pix, ph = p.pix[sel], p.ph[sel]
    zp = zf[pix]
    n, mn, a, b = forward_normals(zp, zf[p.p_r[sel]], zf[p.p_d[sel]], p.r_p[sel], p.r_r[sel], p.r_d[sel])
    res_rgb = p.alb_p[sel] * (sh_basis(n) @ p.sh) + p.spec_p[sel][:, None] - p.img_p[sel]
    nbz = zf[p.nb[sel]]
    R = np.zeros(p.R)
    R[s.rows[0]] = (res_rgb @ LUMA) * ph * p.photo_weight[sel]
    R[s.rows[1]] = np.sqrt(l1) * (zp - p.d0_p[sel]) * p.isu[sel]
    R[s.rows[2]] = np.sqrt(l2) * (4 * nbz[:, 0] - nbz[:, 1:].sum(1)) * p.lap_ok[sel]
    # the depth-independent entries (prior, Laplacian) as set_terms wrote them, in the tile's block order
    J = p.J_all[p.j_offset[t]:p.j_offset[t + 1]].copy()
    dS_dn = np.einsum("kc,nkj->ncj", p.sh, sh_gradient(n))
    for which, dm in enumerate((np.cross(p.r_p[sel], b - a), np.cross(b, p.r_r[sel]), np.cross(p.r_d[sel], a))):
        rows, k, at = s.ph[which]
        if not len(rows):
            continue
        nn, dms = n[k], dm[k]
        dn = (dms - nn * (nn * dms).sum(1, keepdims=True)) / mn[k]
        J[at] = ((p.alb_p[rows] * np.einsum("ncj,nj->nc", dS_dn[k], dn)) @ LUMA) * p.photo_weight[rows]
    return R, J.reshape(-1, p.R)


def solve_public(p, iterations, linear_solver, threads=1):
    """The stage's solve (DepthProblem.solve's options) with one public-API cost function per tile."""
    pyceres = ceres_tiles.import_pyceres()

    class PublicTileCost(pyceres.CostFunction):
        def __init__(self, t):
            super().__init__()
            self.t, self.s = t, _TileSubset(p, t)
            self.set_num_residuals(p.R)
            self.set_parameter_block_sizes([1] * len(p.tile_params[t]))

        def Evaluate(self, parameters, residuals, jacobians):
            z_tile = np.array([q[0] for q in parameters])
            R, J = evaluate_tile(p, self.s, z_tile, self.t)
            residuals[:] = R
            if jacobians is not None:
                for k, jac in enumerate(jacobians):
                    if jac is not None:
                        jac[:] = J[k]
            return True

    params = np.ascontiguousarray(p.z.ravel()[p.upix], dtype=float)
    blocks = [params[i:i + 1] for i in range(len(params))]
    problem = pyceres.Problem()
    costs = [PublicTileCost(t) for t in range(p.n_tiles)]
    for t, cost in enumerate(costs):
        problem.add_residual_block(cost, None, [blocks[u] for u in p.tile_params[t]])
    opts = pyceres.SolverOptions()
    opts.linear_solver_type = getattr(pyceres.LinearSolverType, linear_solver)
    opts.max_num_iterations = int(iterations)
    opts.num_threads = threads
    opts.logging_type = pyceres.LoggingType.SILENT
    opts.function_tolerance = 1e-5
    summary = pyceres.SolverSummary()
    t0 = time.perf_counter()
    pyceres.solve(opts, problem, summary)
    wall = time.perf_counter() - t0
    p.z.ravel()[p.upix] = params
    return {"seconds": round(wall, 3), "initial_cost": float(summary.initial_cost),
            "final_cost": float(summary.final_cost),
            "iterations": int(summary.num_successful_steps + summary.num_unsuccessful_steps),
            "jacobian_seconds": round(float(summary.jacobian_evaluation_time_in_seconds), 3),
            "residual_seconds": round(float(summary.residual_evaluation_time_in_seconds), 3),
            "linear_solver_seconds": round(float(summary.linear_solver_time_in_seconds), 3)}


def run_ceres_bridge(size=256, iterations=5, linear_solver="SPARSE_NORMAL_CHOLESKY", log=print):
    """Both bridges on the same lit-sphere problem (a wrong start of ±1.5 mm ripples): their Ceres
    summaries, the wall-time ratio and how far their solutions are apart (mm)."""
    camera, depth, hit, light, albedo, image = lit_sphere(size)
    import cv2

    k = np.ones((3, 3), np.uint8)
    known = cv2.erode(hit.astype(np.uint8), k, iterations=3).astype(bool)
    unknown = cv2.erode(known.astype(np.uint8), k, iterations=2).astype(bool)
    u, v = np.meshgrid(np.arange(size), np.arange(size))
    d0 = np.where(known, depth + 1.5 * np.sin(u / 5.0) * np.sin(v / 6.0), 0.0)
    zero = np.zeros(depth.shape)

    def problem():
        p = ceres_tiles.DepthProblem(d0, known, unknown, known, camera, image, (zero, zero))
        p.set_terms(light, albedo, zero, (0.0001, 0.001, 0.0, 0.0))
        return p

    stage = problem()
    ours = stage.solve(iterations, linear_solver, threads=1)
    log(f"stage bridge: {ours['seconds']} s")
    public_p = problem()
    public = solve_public(public_p, iterations, linear_solver)
    log(f"public API: {public['seconds']} s")
    m = unknown
    return {"size": size, "unknowns": int(m.sum()), "tiles": int(stage.n_tiles), "iterations": iterations,
            "stage_bridge": {k: ours[k] for k in ("seconds", "initial_cost", "final_cost", "iterations",
                                                   "jacobian_seconds", "residual_seconds", "linear_solver_seconds")},
            "public_api": public,
            "public_over_stage": round(public["seconds"] / max(ours["seconds"], 1e-9), 2),
            "solutions_apart_mm": float(np.abs(stage.z - public_p.z)[m].max())}
