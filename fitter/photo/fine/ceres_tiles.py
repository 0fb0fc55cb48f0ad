"""The fine stage's depth objective (Eq. 9) as a Ceres problem, through pyceres.

How the Ceres problem is cut: one scalar parameter block per unknown pixel, residuals
grouped in 4×4-pixel tiles (one Python cost function per tile, 3 rows per pixel). All residuals and
Jacobians are computed by numpy for every tile at once when Ceres starts evaluating a new point, and
each tile's callback only copies its slice. pyceres 2.6 does not expose
Problem::Options::evaluation_callback, so the stage finds the point itself: the first tile evaluated in a
pass reads Ceres's whole state vector, whose layout (where each unknown sits in it) is learned from the
pointers Ceres hands to the tiles in the first pass and checked on every later call; the same layout
gives where Ceres keeps each tile's Jacobian blocks, so a tile's Jacobian is one memory copy (also
checked on every call, by its first and last block's addresses; block by block otherwise).
"""
import ctypes
import threading
import time

import numpy as np

from ..texture import LUMA, sh_basis
from .geometry import forward_normals, sh_gradient

TILE = 4


def import_pyceres():
    """The pyceres module, imported so that the process keeps its SIGTERM handling: importing pyceres
    installs glog's failure-signal handler, which answers SIGTERM with a native stack dump. The handler
    SIGTERM had before is put back (possible from the main thread only, where Python handles signals)."""
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    import pyceres

    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
    return pyceres


class DepthProblem:
    """Eq. 9 on the unknown pixels, cut into 4×4 residual tiles with scalar parameter blocks."""

    def __init__(self, depth0, known, unknown, skin, camera, image, gray_gradients, gradient_term=False):
        # rows per pixel: photometric (luminance of the colour residual), prior, Laplacian
        # [, gradient matching in x and y]
        self.ROWS = 5 if gradient_term else 3
        self.h, self.w = depth0.shape
        self.camera = camera
        self.depth0 = depth0
        self.unknown = unknown
        self.uidx = np.full(depth0.shape, -1, np.int64)
        self.upix = np.flatnonzero(unknown.ravel())
        self.uidx.ravel()[self.upix] = np.arange(len(self.upix))
        self.z = depth0.astype(float).copy()
        self.image = image
        self.gx, self.gy = gray_gradients
        h, w = self.h, self.w
        # photometric pixels: skin, with right and lower neighbours on the surface, touching an unknown
        right = np.zeros_like(known)
        right[:, :-1] = known[:, 1:]
        down = np.zeros_like(known)
        down[:-1] = known[1:]
        ur = np.zeros_like(unknown)
        ur[:, :-1] = unknown[:, 1:]
        ud = np.zeros_like(unknown)
        ud[:-1] = unknown[1:]
        self.photo = skin & known & right & down & (unknown | ur | ud)
        # tiles: every 4×4 block holding an unknown or a photometric pixel
        ty, tx = np.divmod(np.arange(h * w), w)
        tile_of = (ty // TILE) * ((w + TILE - 1) // TILE) + tx // TILE
        active = (unknown | self.photo).ravel()
        tiles, self.pix_tile = np.unique(tile_of[active], return_inverse=True)  # tile of each residual pixel
        self.pix = np.flatnonzero(active)                          # residual pixels (flat index)
        self.n_tiles = len(tiles)
        self.pix_slot = (ty[self.pix] % TILE) * TILE + tx[self.pix] % TILE  # slot within the tile
        self.R = TILE * TILE * self.ROWS
        # which unknowns each residual pixel touches: itself, right, down, left, up
        offs = np.array([0, 1, w, -1, -w])
        nb = self.pix[:, None] + offs[None, :]
        inside = np.ones_like(nb, bool)
        px, py = tx[self.pix], ty[self.pix]
        inside[:, 1] = px < w - 1
        inside[:, 2] = py < h - 1
        inside[:, 3] = px > 0
        inside[:, 4] = py > 0
        nb = np.where(inside, nb, self.pix[:, None])
        nbu = np.where(inside, self.uidx.ravel()[nb], -1)
        self.nb_inside = inside
        pairs_t = np.repeat(self.pix_tile, 5)[nbu.ravel() >= 0]
        pairs_u = nbu.ravel()[nbu.ravel() >= 0]
        key = np.unique(pairs_t * len(self.upix) + pairs_u)
        kt, ku = np.divmod(key, len(self.upix))
        starts = np.searchsorted(kt, np.arange(self.n_tiles + 1))
        self.tile_params = [ku[starts[t]:starts[t + 1]] for t in range(self.n_tiles)]
        # the parameters whose pixel lies in the tile itself: each unknown is read once, by its own tile
        tile_of_unknown = np.empty(len(self.upix), np.int64)
        is_unknown = self.uidx.ravel()[self.pix] >= 0
        tile_of_unknown[self.uidx.ravel()[self.pix[is_unknown]]] = self.pix_tile[is_unknown]
        own = tile_of_unknown[ku] == kt
        self.own_cols = [np.flatnonzero(own[starts[t]:starts[t + 1]]) for t in range(self.n_tiles)]
        self.key, self.key_starts = key, starts
        self.nb, self.nbu = nb, nbu
        self.R_all = np.zeros((self.n_tiles, self.R))
        # Jacobians of all tiles in one array, tile after tile, each (its parameters × R) parameter-major:
        # the layout of Ceres's own block-sparse Jacobian values for this problem
        n_params = np.diff(starts)
        self.j_offset = np.r_[0, np.cumsum(n_params * self.R)]
        self.J_all = np.zeros(int(self.j_offset[-1]))
        self.sh = self.albedo = self.specular = None
        self.pass_states = {}         # Ceres's layout for this problem per linear solver, learned once
        self.python_seconds = 0.0
        self.evaluations = 0
        self._prepare_pixels()
        self.gx_p, self.gy_p = self.gx.ravel()[self.pix], self.gy.ravel()[self.pix]

    def local_col(self, tiles, unknowns):
        """Column of each (tile, unknown) pair within its tile's parameter list."""
        pos = np.searchsorted(self.key, tiles * len(self.upix) + unknowns)
        return pos - self.key_starts[tiles]

    def _prepare_pixels(self):
        """Index arrays of the residual pixels: neighbours, rays, where each residual and each Jacobian
        entry lives in R_all / J_all (computed once per problem)."""
        h, w = self.h, self.w
        pix = self.pix
        py, px = np.divmod(pix, w)

        def rays(u, v):
            return self.camera.rays(np.column_stack([u, v]))

        self.r_p, self.r_r, self.r_d = rays(px, py), rays(px + 1.0, py), rays(px, py + 1.0)
        self.p_r = np.where(px < w - 1, pix + 1, pix)
        self.p_d = np.where(py < h - 1, pix + w, pix)
        self.ph = self.photo.ravel()[pix]
        self.photo_weight = np.ones(len(pix))   # weights of the photometric rows (set_photo_weights)
        self.isu = self.uidx.ravel()[pix] >= 0
        self.d0_p = self.depth0.ravel()[pix]
        self.lap_ok = self.isu & np.all(self.nb_inside, axis=1)
        t = np.repeat(self.pix_tile[:, None], 5, axis=1)
        self.cols = np.where(self.nbu >= 0, self.local_col(t, np.maximum(self.nbu, 0)), -1)
        tl, base = self.pix_tile, self.pix_slot * self.ROWS
        self.res_at = [tl * self.R + base + k for k in range(self.ROWS)]
        R = self.R
        block0 = self.j_offset[:-1] // R  # global index of each tile's first Jacobian block

        def flat(sel, which, row):  # where (pixel row, parameter) lives in J_all under the current layout
            return self.block_position[block0[tl[sel]] + self.cols[sel, which]] * R + base[sel] + row

        self._flat = flat
        self.ph_blocks = []
        for which in range(3):
            sel = (self.cols[:, which] >= 0) & self.ph
            self.ph_blocks.append((sel, block0[tl[sel]] + self.cols[sel, which], base[sel]))
        self.set_block_layout(np.arange(int(self.j_offset[-1]) // R))

    def set_block_layout(self, position):
        """Place Jacobian block g (tile t's k-th parameter, g = first block of t + k) at `position[g]`
        (Ceres orders a tile's blocks by its own column order); moves the values already written."""
        R = self.R
        old = getattr(self, "block_position", None)
        if old is not None and hasattr(self, "J_all"):
            J = np.empty_like(self.J_all).reshape(-1, R)
            J[position] = self.J_all.reshape(-1, R)[old]
            self.J_all = J.reshape(-1)
        self.block_position = np.asarray(position)
        self.J_address = self.J_all.ctypes.data
        self.ph_entries = [(sel, self.block_position[g] * R + rows) for sel, g, rows in self.ph_blocks]

    def set_terms(self, sh, albedo, specular, lam):
        """Lighting (9, 3), albedo (h, w, 3), specular (h, w) and the phase's (λd1, λd2, λd3, λd4); writes
        the Jacobian entries that do not depend on the depth (prior, Laplacian, gradient terms)."""
        self.sh, self.albedo, self.specular = sh, albedo, specular
        self.lam = lam
        pix = self.pix
        self.alb_p = albedo.reshape(-1, 3)[pix]
        self.img_p = self.image.reshape(-1, 3)[pix]
        self.spec_p = specular.ravel()[pix]
        l1, l2, l3, l4 = lam
        J = self.J_all  # every entry written here sits at a fixed place; the others stay zero
        cols, flat = self.cols, self._flat
        sel = cols[:, 0] >= 0
        J[flat(sel, 0, 1)] = np.sqrt(l1)
        for j, coef in ((0, 4.0), (1, -1.0), (2, -1.0), (3, -1.0), (4, -1.0)):
            sel = (cols[:, j] >= 0) & self.lap_ok
            J[flat(sel, j, 2)] = np.sqrt(l2) * coef
        if l3 > 0 and self.ROWS < 5:
            raise ValueError("this DepthProblem was built without the gradient-matching rows")
        for row, j in (((3, 1), (4, 2)) if self.ROWS == 5 else ()):
            sel = (cols[:, j] >= 0) & self.ph
            J[flat(sel, j, row)] = np.sqrt(l3) * l4
            sel = (cols[:, 0] >= 0) & self.ph
            J[flat(sel, 0, row)] = -np.sqrt(l3) * l4

    def set_photo_weights(self, robust_scale=3.0, highlight_scale=0.0):
        """Weights √w on the photometric rows, a product of two factors (1 where a factor is off):
        - Cauchy, 1/√(1 + (r/σ)²) from the residuals at the current depth, σ = `robust_scale` × the
          normal-consistent median absolute residual (1.4826… × median |r|, scipy's MAD about 0): pixels the shading model cannot explain at all (glasses frames, hair strands) stop
          pulling the depth (IRLS, one reweighting per phase);
        - highlights, 1/√(1 + (β/`highlight_scale`)²) with β the specular layer ([0, 1] colour units): a
          highlight follows the normal far more sharply than the low-passed β can, so where β is large the
          residual is the highlight's structure rather than diffuse shading."""
        self.photo_weight = np.ones(len(self.pix))
        weight = np.ones(len(self.pix))
        if robust_scale:
            self.compute(self.z.ravel()[self.upix], False)
            r = self.R_all.reshape(-1)[self.res_at[0]]
            from scipy.stats import median_abs_deviation  # here: scipy.stats takes 0.5 s to import

            mad = median_abs_deviation(r[self.ph], center=_zero, scale="normal")
            sigma = robust_scale * max(float(mad), 1.4826e-6)
            weight /= np.sqrt(1.0 + (r / sigma) ** 2)
        if highlight_scale:
            weight /= np.sqrt(1.0 + (self.spec_p / highlight_scale) ** 2)
        self.photo_weight = weight
        return weight

    def compute(self, z_unknown, jacobians):
        """Fill R_all (and the depth-dependent entries of J_all) at the given unknown depths, for every
        tile at once."""
        t0 = time.perf_counter()
        zf = self.z.reshape(-1)
        zf[self.upix] = z_unknown
        l1, l2, l3, l4 = self.lam
        pix, ph = self.pix, self.ph
        zp = zf[pix]
        n, mn, a, b = forward_normals(zp, zf[self.p_r], zf[self.p_d], self.r_p, self.r_r, self.r_d)
        res_rgb = self.alb_p * (sh_basis(n) @ self.sh) + self.spec_p[:, None] - self.img_p
        nbz = zf[self.nb]
        R = self.R_all.reshape(-1)
        R[self.res_at[0]] = (res_rgb @ LUMA) * ph * self.photo_weight
        R[self.res_at[1]] = np.sqrt(l1) * (zp - self.d0_p) * self.isu
        R[self.res_at[2]] = np.sqrt(l2) * (4 * nbz[:, 0] - nbz[:, 1:].sum(1)) * self.lap_ok
        if self.ROWS == 5:  # gradient matching on the height h = −z: ∇I − λd4 ∇h = ∇I + λd4 ∇z
            R[self.res_at[3]] = np.sqrt(l3) * (self.gx_p + l4 * (nbz[:, 1] - nbz[:, 0])) * ph
            R[self.res_at[4]] = np.sqrt(l3) * (self.gy_p + l4 * (nbz[:, 2] - nbz[:, 0])) * ph
        if jacobians:
            J = self.J_all
            dS_dn = np.einsum("kc,nkj->ncj", self.sh, sh_gradient(n))     # (N, 3 colours, 3)
            for which, dm in enumerate((np.cross(self.r_p, b - a), np.cross(b, self.r_r), np.cross(self.r_d, a))):
                sel, at = self.ph_entries[which]
                nn, dms = n[sel], dm[sel]
                dn = (dms - nn * (nn * dms).sum(1, keepdims=True)) / mn[sel]
                J[at] = ((self.alb_p[sel] * np.einsum("ncj,nj->nc", dS_dn[sel], dn)) @ LUMA) * self.photo_weight[sel]
        self.evaluations += 1
        self.python_seconds += time.perf_counter() - t0

    def photometric_rms(self, z_unknown=None):
        """RMS colour residual ([0, 1] units) over the photometric pixels, at the current depths or with
        the unknowns set to `z_unknown`; unweighted by the robust weights."""
        zf = self.z.ravel().copy()
        if z_unknown is not None:
            zf[self.upix] = z_unknown
        ph = self.ph
        if not ph.any():
            return 0.0
        n = forward_normals(zf[self.pix], zf[self.p_r], zf[self.p_d], self.r_p, self.r_r, self.r_d)[0][ph]
        pred = self.alb_p[ph] * (sh_basis(n) @ self.sh) + self.spec_p[ph][:, None]
        return float(np.sqrt(np.mean((pred - self.img_p[ph]) ** 2)))

    def solve(self, iterations, linear_solver, threads=2):
        """Run Ceres from the current depths; returns a dict of its summary figures."""
        pyceres = import_pyceres()
        t_build = time.perf_counter()
        if linear_solver not in self.pass_states:  # Ceres's layout depends on the linear solver's matrix
            self.pass_states[linear_solver] = _PassState(self)
        state = self.pass_states[linear_solver]
        state.started = state.done = 0
        state.error = None
        state.copy_seconds = 0.0
        params = np.ascontiguousarray(self.z.ravel()[self.upix], dtype=float)
        blocks = [params[i:i + 1] for i in range(len(params))]
        problem = pyceres.Problem()
        costs = []
        for t in range(self.n_tiles):
            cost = _tile_cost(state, t, len(self.tile_params[t]), self.R)
            costs.append(cost)
            problem.add_residual_block(cost, None, [blocks[u] for u in self.tile_params[t]])
        build = time.perf_counter() - t_build
        opts = pyceres.SolverOptions()
        opts.linear_solver_type = getattr(pyceres.LinearSolverType, linear_solver)
        opts.max_num_iterations = int(iterations)
        opts.num_threads = threads
        opts.minimizer_progress_to_stdout = False
        opts.logging_type = pyceres.LoggingType.SILENT
        opts.function_tolerance = 1e-5
        summary = pyceres.SolverSummary()
        self.python_seconds = 0.0
        t0 = time.perf_counter()
        pyceres.solve(opts, problem, summary)
        wall = time.perf_counter() - t0
        if state.error:
            raise RuntimeError(state.error)
        self.z.ravel()[self.upix] = params
        return {"iterations": int(summary.num_successful_steps + summary.num_unsuccessful_steps),
                "initial_cost": float(summary.initial_cost), "final_cost": float(summary.final_cost),
                "termination": str(summary.termination_type).split(".")[-1],
                "seconds": round(wall, 4), "python_seconds": round(self.python_seconds + state.copy_seconds, 4),
                "numpy_seconds": round(self.python_seconds, 4),
                "first_pass_seconds": round(getattr(state, "first_pass_seconds", 0.0), 4),
                "memmove": state.n_memmove, "blockwise": state.n_blockwise, "copy_seconds": round(state.copy_seconds, 4),
                "linear_solver_seconds": round(float(summary.linear_solver_time_in_seconds), 4),
                "jacobian_seconds": round(float(summary.jacobian_evaluation_time_in_seconds), 4),
                "residual_seconds": round(float(summary.residual_evaluation_time_in_seconds), 4),
                "preprocessor_seconds": round(float(summary.preprocessor_time_in_seconds), 4),
                "build_seconds": round(build, 4),
                "evaluations": int(self.evaluations), "tiles": int(self.n_tiles), "unknowns": int(len(self.upix))}


def _zero(x, axis):
    """The centre 0 for scipy's median_abs_deviation: the median absolute value."""
    return 0.0


class _PassState:
    """Hands Ceres the pass's values (see the module docstring).

    First pass (Ceres evaluating the starting point, which the problem already holds): every tile copies
    its slice and reports where Ceres keeps its parameters, its residuals and its Jacobian blocks. From
    that the position of each unknown in Ceres's state vector is known, and whether Ceres's residuals
    and Jacobian values are laid out tile after tile as R_all and J_all are (they are: Ceres's program
    evaluator writes one block-sparse matrix in residual-block order). In every later pass the first
    tile evaluated reads the whole state, triggers one vectorised evaluation and, when the layout
    matched, writes all residuals (and Jacobians) with one memory copy each; every tile checks that its
    own buffers are where that layout says, so a different layout stops the solve with an error
    instead of being misread."""

    def __init__(self, problem: DepthProblem):
        self.problem = problem
        self.n_tiles = problem.n_tiles
        self.n_memmove = self.n_blockwise = 0   # Jacobian writes: one copy per tile / block by block
        self.bulk_copies = True       # False: always write block by block (the reference path, for tests)
        self.started = 0             # tiles that began / finished the current pass
        self.done = 0
        self.first_pass = True
        self.layout = {}
        self.copy_seconds = 0.0
        self.lock = threading.Lock()
        self.layout_known = False     # Ceres's Jacobian blocks are laid out as J_all (checked in pass 1)
        self.pass_jac_base = None
        self.pass_base = 0
        self.error = None

    def start_pass(self, tile, ptr, jac_ptr):
        """First tile of a pass: evaluate every tile at Ceres's point (read from its state vector)."""
        p = self.problem
        if self.first_pass:
            self.first_pass_t0 = time.perf_counter()
            p.compute(p.z.ravel()[p.upix], True)
            return
        self.pass_base = ptr - 8 * int(self.tile_first[tile])
        state = np.frombuffer((ctypes.c_double * self.size).from_address(self.pass_base), np.float64)
        p.compute(state[self.offsets], jac_ptr is not None)
        self.pass_jac_base = None
        if jac_ptr is not None:
            self.pass_jac_base = jac_ptr - 8 * p.R * int(p.block_position[p.j_offset[tile] // p.R])

    def params_in_place(self, tile, ptr):
        return ptr == self.pass_base + 8 * int(self.tile_first[tile])

    def jacobian_in_place(self, tile, jac_ptr):
        p = self.problem
        return jac_ptr == self.pass_jac_base + 8 * p.R * int(p.block_position[p.j_offset[tile] // p.R])

    def finish_first_pass(self):
        """Positions of the unknowns in Ceres's state and the Jacobian layout they imply: Ceres stores a
        residual block's Jacobian blocks as one run ordered by column, i.e. by the state position of their
        parameters (checked at every use, by the first and last block's addresses)."""
        p = self.problem
        self.first_pass_seconds = time.perf_counter() - self.first_pass_t0
        U = len(p.upix)
        addr = np.zeros(U, np.int64)
        for t, ptrs in self.layout.items():
            addr[p.tile_params[t][p.own_cols[t]]] = ptrs
        offsets = (addr - addr.min()) // 8
        if not addr.all() or len(np.unique(offsets)) != U or int(offsets.max()) + 1 != U:
            raise RuntimeError("Ceres's parameters are not one contiguous vector; the fine stage cannot "
                               "read its evaluation point")
        self.offsets, self.size = offsets, U
        block0 = p.j_offset[:-1] // p.R
        tile_of_block = np.repeat(np.arange(self.n_tiles), np.diff(p.j_offset) // p.R)
        param_of_block = np.concatenate(p.tile_params)
        order = np.lexsort((offsets[param_of_block], tile_of_block))  # blocks by tile, then Ceres's column
        position = np.empty(len(param_of_block), np.int64)
        position[order] = np.arange(len(param_of_block))
        self.tile_first = offsets[param_of_block[block0]]
        p.set_block_layout(position)
        self.layout_known = True
        self.first_pass = False
        self.layout = {}


def _make_tile_cost():
    pyceres = import_pyceres()

    class TileCost(pyceres.CostFunction):
        """Residuals of one 4×4 tile; their values come from the pass's vectorised evaluation."""

        def __init__(self, state, tile, n_params, n_residuals):
            super().__init__()
            self.state, self.tile = state, tile
            p = state.problem
            self.R = p.R
            self.g0, self.g1 = int(p.j_offset[tile]) // p.R, int(p.j_offset[tile + 1]) // p.R
            self.set_num_residuals(n_residuals)
            self.set_parameter_block_sizes([1] * n_params)

        def Evaluate(self, parameters, residuals, jacobians):
            st, tile, R, g0, g1 = self.state, self.tile, self.R, self.g0, self.g1
            p = st.problem
            ptr = _address(parameters[0])
            jac_ptr = None if jacobians is None else _address(jacobians[0])
            with st.lock:  # Ceres may run tiles on several threads: each pass is evaluated once, first
                if st.started == 0:
                    st.start_pass(tile, ptr, jac_ptr)
                st.started += 1
            t0 = time.perf_counter()
            if st.first_pass:  # its Jacobian is written block by block below (no layout known yet)
                own = p.own_cols[tile]
                ptrs = np.fromiter((_address(parameters[k]) for k in own), np.int64, len(own))
                with st.lock:
                    st.layout[tile] = ptrs
                start = None
            elif not st.params_in_place(tile, ptr):
                st.error = "Ceres evaluated the fine stage's tiles out of the layout of its first pass"
                return False
            else:
                rank = p.block_position[g0:g1] - g0
                start = None if jac_ptr is None or not st.jacobian_in_place(tile, jac_ptr) else \
                    jac_ptr - 8 * R * int(rank[0])
            residuals[:] = p.R_all[tile]
            copies = None
            if jac_ptr is not None:
                if st.bulk_copies and start is not None and _address(jacobians[-1]) == start + 8 * R * int(rank[-1]):
                    # the tile's blocks are one contiguous run in Ceres's matrix, in Ceres's column order
                    ctypes.memmove(start, p.J_address + 8 * R * g0, 8 * R * (g1 - g0))
                    copies = "memmove"
                else:
                    copies = "blockwise"
                    for k, jac in enumerate(jacobians):
                        if jac is not None:
                            o = int(p.block_position[g0 + k]) * R
                            jac[:] = p.J_all[o:o + R]
            with st.lock:
                st.copy_seconds += time.perf_counter() - t0
                if copies == "memmove":
                    st.n_memmove += 1
                elif copies == "blockwise":
                    st.n_blockwise += 1
                st.done += 1
                if st.done == st.n_tiles:
                    st.started = st.done = 0
                    if st.first_pass:
                        st.finish_first_pass()
            return True

    return TileCost


_tile_cost_class = None


def _address(array):
    """Address of a (writable) numpy array's first element, as an int (faster than __array_interface__)."""
    return ctypes.addressof(ctypes.c_double.from_buffer(array))


def _tile_cost(state, tile, n_params, n_residuals):
    """A TileCost (the class is made on first use: pyceres is imported only when the stage runs)."""
    global _tile_cost_class
    if _tile_cost_class is None:
        _tile_cost_class = _make_tile_cost()
    return _tile_cost_class(state, tile, n_params, n_residuals)
