"""Optimal-step non-rigid ICP (Amberg et al. 2007) with S1's texture constraint (T-ICP, S1 Eq. 6).

Unknowns: one affine transform X_i (4 × 3) per template vertex, acting on the vertex's template position
v̂_i = [(v_i − c)/s, 1] (c: template centroid, s = NORMALISE_MM, so the stiffness does not depend on
where the face sits or its units). The deformed vertex is v̂_iᵀ X_i. Per stiffness step α, landmark
weight β:

    E(X) = α² ‖(M ⊗ G) X‖² + Σ_i w_i ‖v̂_iᵀ X_i − u_i‖² + β² Σ_l ‖v̂_lᵀ X_l − p_l‖²

M: the template's edge–vertex incidence matrix; G = diag(1, 1, 1, γ); u_i: the vertex's
correspondence on the target; p_l: landmark targets. The normal equations
(α² (MᵀM ⊗ G²) + DᵀWD + β² D_lᵀD_l) X = DᵀWU + β² D_lᵀP are one 4n × 4n SPD system with three
right-hand sides.

What is factored and reused (`NicpTopology`, kept per model by `PreparedModel.nicp_topology` for the
face area): CHOLMOD's symbolic analysis of that pattern is computed once and reused by every numeric
factorisation (every stiffness step of every registration). Within a step the matrix is held fixed, so its numeric factor is reused by
every ICP iteration of the step, which then costs a closest-point query and one back-substitution:
every vertex keeps data weight w_i = 1, and a vertex whose correspondence is rejected (too far, colour
too different, normals incompatible, target on a boundary) gets its own current position as target,
so it is held where it is and follows its neighbours over the iterations instead of being pulled.

Correspondences (S1 Eq. 6): for each template vertex the nearest target point in the joint space
(xyz, λ_tex·rgb) — a 6-D k-d tree, so the distance is √(‖Δv‖² + λ²‖Δc‖²) rather than S1's sum of the
two norms — kept if ‖Δv‖ < τ_v and ‖Δc‖ < τ_c.
"""
import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..geometry.cholesky import FactorCache

NORMALISE_MM = 100.0
REJECTED_WEIGHT = 1e-3   # data weight of a vertex without an accepted correspondence at a step's start
# ε‖X − I‖²: keeps the system definite where the data cannot tell the transforms' parts apart (a planar
# template: z and the translation are then the same column of D)
IDENTITY_PRIOR = 1e-6
_system_ids = itertools.count()


@dataclass
class Target:
    """What the template is registered to (camera or scan frame, mm)."""

    points: np.ndarray                    # (K, 3)
    normals: np.ndarray                   # (K, 3) unit
    colors: np.ndarray = None             # (K, 3) RGB in [0, 1], or None
    boundary: np.ndarray = None           # (K,) bool: on a hole, image or depth-discontinuity edge

    def __post_init__(self):
        self.points = np.asarray(self.points, float)
        if self.boundary is None:
            self.boundary = np.zeros(len(self.points), bool)


@dataclass
class NicpSettings:
    """Schedule and thresholds. Distances are fractions of the face's interocular distance (IOD)."""

    # two steps: measured ~1.7× faster than α = 10, 3, 1 (SCHEDULES["accurate"]) for 0.01–0.04 mm more
    # scan-to-registration distance and 0.3 mm more brow error on the synthetic captures (BENCHMARKS.md)
    stiffness: tuple = (6.0, 1.0)                  # α per step (coordinates in units of NORMALISE_MM)
    landmark_weight: tuple = (0.6, 0.1)            # β per step
    iterations: object = (6, 8)                    # at most, per step (an int, or one per step)
    step_tol_mm: float = 0.05                       # a step ends when the mean vertex moves less
    gamma: float = 1.0
    tau_v_iod: tuple = (0.12, 0.04)                # τ_v per step
    # λ_tex: mm per unit of RGB distance (colours in [0, 1]), × IOD. S1 §5.2 gives 0.013 in its own
    # colour scale; with colours in [0, 1] that makes the colour term too weak to move a brow vertex
    # (measured: brows 1.98 mm with 0.013, 1.80 with 0.05, 1.64 with 0.1; geometry only 2.07)
    lambda_tex_iod: float = 0.1
    tau_c: float = 0.17                            # τ_c on RGB in [0, 1] (S1 §5.2), at least
    tau_c_spread: float = 3.0                      # ... or this × the median colour residual of the matches
    max_normal_deg: float = 60.0
    use_color: bool = True


SCHEDULES = {
    "fast": NicpSettings(),
    "accurate": NicpSettings(stiffness=(10.0, 3.0, 1.0), landmark_weight=(1.0, 0.3, 0.1), iterations=6,
                             tau_v_iod=(0.15, 0.07, 0.04)),
}


@dataclass
class NicpResult:
    vertices: np.ndarray                  # (n, 3) registered template vertices
    inlier_fraction: list                 # per step (last iteration)
    median_residual_mm: list              # per step: median inlier distance
    iterations: int
    step_seconds: list
    factor_seconds: float                 # all numeric factorisations
    info: dict = field(default_factory=dict)


def edges_of(F):
    """(E, 2) unique undirected edges (i < j) of triangles F."""
    e = np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1).astype(np.int64)
    n = int(e.max()) + 1 if len(e) else 0
    key = np.unique(e[:, 0] * n + e[:, 1])
    return np.stack([key // n, key % n], axis=1)


class NicpTopology:
    """What depends on the template's triangles only: MᵀM ⊗ G², the block ordering, the matrix
    pattern in that order with the stiffness and identity values laid out on it, the position of each
    vertex's 4 × 4 data block in it, and CHOLMOD's analysis (`analysis`)."""

    def __init__(self, F, n, gamma):
        e = edges_of(np.asarray(F))
        ne = len(e)
        M = sp.csr_matrix((np.r_[np.ones(ne), -np.ones(ne)], (np.r_[np.arange(ne), np.arange(ne)],
                                                               np.r_[e[:, 0], e[:, 1]])), shape=(ne, n))
        G2 = sp.diags([1.0, 1.0, 1.0, gamma * gamma])
        self.stiff = sp.kron((M.T @ M).tocsr(), G2).tocsc()
        # fill-reducing order computed on the vertex graph and expanded to each vertex's 4 unknowns: it
        # keeps the 4 × 4 blocks together (factorisation 0.24 s against 0.29 s for METIS on the 4n graph)
        self.perm = P = _block_ordering(M.T @ M, 4)
        # the matrix in that order is assembled from value arrays aligned to one pattern: per step only
        # α² s + (w + β² c)[vertex] b + ε i is computed (30 ms of sparse algebra saved per step)
        blocks = sp.kron(sp.identity(n), np.ones((4, 4))).tocsc()
        eye = sp.identity(4 * n, format="csc")
        self.pattern = pattern = _permuted(self.stiff + blocks + eye, P)
        self.s, self.i = (_aligned(_permuted(X, P), pattern) for X in (self.stiff, eye))
        # where entry (a, b) of vertex v's data block lies: block values v̂_v[a] v̂_v[b]
        blk = _permuted(sp.csc_matrix((np.arange(1, 16 * n + 1, dtype=float),
                                       (np.repeat(4 * np.arange(n), 16) + np.tile(np.repeat(np.arange(4), 4), n),
                                        np.repeat(4 * np.arange(n), 16) + np.tile(np.arange(4), 4 * n))),
                                      shape=(4 * n, 4 * n)), P)
        order = _aligned(blk, pattern)  # 1-based flat index (v, a, b) at each block entry, 0 elsewhere
        self.block_entries = np.flatnonzero(order)
        self.block_source = order[self.block_entries].astype(np.int64) - 1
        self.vertex = P[pattern.indices] // 4  # the vertex of each entry's row (data blocks are per vertex)
        self.analysis = FactorCache(pattern, max_factors=1, mode="supernodal", ordering="natural")
        self.shape = (4 * n, 4 * n)


class NicpSystem:
    """The NICP normal equations of one template: its positions (D), and its NicpTopology (the
    stiffness, the ordering, the pattern and CHOLMOD's analysis of it: give the one computed for these
    triangles before, e.g. `PreparedModel.nicp_topology`, or a new one is computed)."""

    def __init__(self, V_template, F, gamma=1.0, topology: "NicpTopology" = None):
        V = np.asarray(V_template, float)
        self.n = n = len(V)
        self.center = V.mean(axis=0)
        Vh = np.column_stack([(V - self.center) / NORMALISE_MM, np.ones(n)])
        self.Vh = Vh
        topo = topology if topology is not None else NicpTopology(np.ascontiguousarray(F), n, gamma)
        if topo.shape != (4 * n, 4 * n):
            raise ValueError("the NicpTopology was built for another template")
        self.stiff, self.perm = topo.stiff, topo.perm
        # D: (n, 4n) with row i = v̂_iᵀ at columns 4i..4i+3
        self.D = sp.csr_matrix((Vh.ravel(), (np.repeat(np.arange(n), 4), np.arange(4 * n))), shape=(n, 4 * n))
        self._pattern, self._s, self._i, self._vertex = topo.pattern, topo.s, topo.i, topo.vertex
        self._b = np.zeros(topo.pattern.nnz)
        self._b[topo.block_entries] = (Vh[:, :, None] * Vh[:, None, :]).ravel()[topo.block_source]
        self.analysis = topo.analysis
        self.token = next(_system_ids)  # names this system's factors in the shared cache

    def matrix(self, alpha, beta, landmark_vertices, weights=None):
        """α² (MᵀM ⊗ G²) + DᵀWD + β² D_lᵀD_l + εI, in the block ordering `perm`; weights: (n,) data
        weights w_i (default 1). (D_l's rows are rows of D: the landmark term adds β² per landmark to
        its vertex's data block.)"""
        w = np.ones(self.n) if weights is None else np.asarray(weights, float).copy()
        if landmark_vertices is not None and len(landmark_vertices) and beta > 0:
            np.add.at(w, np.asarray(landmark_vertices, np.int64), beta * beta)
        data = alpha * alpha * self._s + w[self._vertex] * self._b + IDENTITY_PRIOR * self._i
        p = self._pattern
        return sp.csc_matrix((data, p.indices, p.indptr), shape=p.shape)

    def solve(self, factor, rhs):
        """X (4n, 3) from a factor of `matrix(...)` and the right-hand side in the natural order."""
        X = np.empty_like(rhs)
        X[self.perm] = factor(np.asfortranarray(rhs[self.perm]))
        return X

    def positions(self, X):
        """(n, 3) mm from the stacked affine transforms X (4n, 3)."""
        return (self.D @ X) * NORMALISE_MM + self.center

    def identity(self):
        X = np.zeros((4 * self.n, 3))
        X[0::4, 0] = X[1::4, 1] = X[2::4, 2] = 1.0
        return X


def _permuted(A, perm):
    """A[perm][:, perm] in CSC with sorted indices."""
    B = sp.csr_matrix(A)[perm][:, perm].tocsc()
    B.sort_indices()
    return B


def _aligned(A, pattern):
    """A's values laid out on `pattern`'s entries (A's pattern must be contained in it; both CSC)."""
    n = pattern.shape[0]
    cols_p = np.repeat(np.arange(n), np.diff(pattern.indptr))
    cols_a = np.repeat(np.arange(n), np.diff(A.indptr))
    key_p = cols_p.astype(np.int64) * n + pattern.indices
    key_a = cols_a.astype(np.int64) * n + A.indices
    pos = np.searchsorted(key_p, key_a)
    if not np.array_equal(key_p[np.minimum(pos, len(key_p) - 1)], key_a):
        raise ValueError("matrix pattern not contained in the analysed pattern")
    out = np.zeros(pattern.nnz)
    np.add.at(out, pos, A.data)
    return out


def _block_ordering(graph, block):
    """AMD ordering of a vertex graph, expanded to `block` consecutive unknowns per vertex."""
    from sksparse import cholmod

    n = graph.shape[0]
    p = cholmod.analyze(sp.csc_matrix(graph + sp.identity(n)), ordering_method="amd").P()
    return (block * p[:, None] + np.arange(block)).ravel()


def _normals(V, F):
    from ..geometry.mesh import vertex_normals

    return vertex_normals(V, F)


def nicp(V_init, F, target: Target, iod_mm, settings: NicpSettings = None, landmark_vertices=None,
         landmark_targets=None, template_colors=None, color_update=None, system: NicpSystem = None):
    """Register the template (V_init (n, 3), F) to `target`.

    iod_mm: the face's interocular distance (sets λ_tex and τ_v); landmark_vertices (L,) with
    landmark_targets (L, 3): optional landmark term; template_colors (n, 3) in [0, 1]: the template's
    colour for the texture constraint (None: geometry only); color_update(V) -> (n, 3): called between
    stiffness steps to refit the template's colour on the current registration; system: a NicpSystem
    built for V_init's topology and positions (reused across registrations with the same template).
    """
    s = settings or NicpSettings()
    system = system or NicpSystem(V_init, F, s.gamma)
    if system.n != len(V_init):
        raise ValueError("the NicpSystem was built for another template")
    use_color = s.use_color and template_colors is not None and target.colors is not None
    lam = s.lambda_tex_iod * iod_mm
    tgt = target.points if not use_color else np.column_stack([target.points, lam * target.colors])
    tree = cKDTree(tgt)
    cos_max = np.cos(np.radians(s.max_normal_deg))
    lv = None if landmark_vertices is None else np.asarray(landmark_vertices, np.int64)
    lt = None if landmark_targets is None else (np.asarray(landmark_targets, float) - system.center) / NORMALISE_MM
    X = X_id = system.identity()
    # start from V_init: identity transforms act on the template positions, which are V_init
    V = system.positions(X)
    colors = None if not use_color else np.asarray(template_colors, float)
    inliers, residuals, step_s = [], [], []
    factor_s = 0.0
    iters = 0
    n_steps = len(s.stiffness)
    for k in range(n_steps):
        t_step = time.perf_counter()
        alpha, beta = s.stiffness[k], s.landmark_weight[min(k, len(s.landmark_weight) - 1)]
        tau_v = s.tau_v_iod[min(k, len(s.tau_v_iod) - 1)] * iod_mm
        def correspondences(V, colors):
            N = _normals(V, F)
            q = V if not use_color else np.column_stack([V, lam * colors])
            # no match can be accepted beyond this joint distance: bounding the search makes the
            # template's parts far from the capture (ears, neck of a cut scan) cost nothing
            bound = tau_v if not use_color else np.hypot(tau_v, lam * s.tau_c)
            _, idx = tree.query(q, distance_upper_bound=bound, workers=-1)
            found = idx < len(target.points)
            idx = np.where(found, idx, 0)
            P = target.points[idx]
            dv = np.linalg.norm(P - V, axis=1)
            ok = found & (dv < tau_v) & ~target.boundary[idx] & ((N * target.normals[idx]).sum(1) > cos_max)
            if use_color:
                # τ_c, or what the texture model cannot explain at the geometric matches if that is more
                # (a crude texture model must not reject a real capture's skin wholesale)
                dc = np.linalg.norm(colors - target.colors[idx], axis=1)
                tau_c = max(s.tau_c, s.tau_c_spread * float(np.median(dc[ok]))) if ok.any() else s.tau_c
                ok &= dc < tau_c
            return P, dv, ok

        P, dv, ok = correspondences(V, colors)
        # the step's matrix: data weight 1 for the vertices matched now, REJECTED_WEIGHT for the others
        # (they follow their neighbours' transforms); held fixed for the step's iterations
        w = np.where(ok, 1.0, REJECTED_WEIGHT)
        t0 = time.perf_counter()
        factor, _ = system.analysis.factor((system.token, k), lambda: system.matrix(alpha, beta, lv, w))
        factor_s += time.perf_counter() - t0
        max_iter = s.iterations[min(k, len(s.iterations) - 1)] if isinstance(s.iterations, (tuple, list)) \
            else s.iterations
        for it in range(max_iter):
            iters += 1
            if it:
                P, dv, ok = correspondences(V, colors)
            U = np.where(ok[:, None], P, V)  # a vertex rejected now but weighted 1 is held where it is
            rhs = system.D.T @ (w[:, None] * (U - system.center) / NORMALISE_MM) + IDENTITY_PRIOR * X_id
            if lv is not None and beta > 0:
                rhs = rhs + beta * beta * (system.D[lv].T @ lt)
            X = system.solve(factor, rhs)
            V_prev, V = V, system.positions(X)
            if np.linalg.norm(V - V_prev, axis=1).mean() < s.step_tol_mm:
                break
        inliers.append(float(ok.mean()))
        residuals.append(float(np.median(dv[ok])) if ok.any() else float("nan"))
        if use_color and color_update is not None and k < n_steps - 1:
            colors = np.asarray(color_update(V), float)
        step_s.append(time.perf_counter() - t_step)
    return NicpResult(V, inliers, residuals, iters, step_s, factor_s)
