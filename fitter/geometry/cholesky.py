"""Sparse Cholesky (CHOLMOD through scikit-sparse) with the analysis done once and factors cached.

A `FactorCache` is built from one matrix that fixes the sparsity pattern: CHOLMOD's symbolic analysis
(fill-reducing ordering, elimination tree, pattern of L) is computed once there. Later matrices with
the same pattern get only a numeric factorisation, which reuses that analysis, and each numeric factor
is kept under a caller-given key (e.g. "which constraints are active") in a small LRU cache: a solve
with a key seen before is a back-substitution only. Used by the medium stage (Laplacian deformation)
and by non-rigid ICP. One FactorCache may be shared by threads: `factor` and `solve` hold its lock
(CHOLMOD keeps workspace in each factor's own state, so two solves with one factor must not overlap).
"""
import threading
from collections import OrderedDict

import numpy as np
import scipy.sparse as sp

from ..errors import InputError

try:
    from sksparse import cholmod
except ImportError as e:  # pragma: no cover - scikit-sparse is a hard dependency; say how to get it
    raise InputError("scikit-sparse is missing: run 'make setup' (it needs Debian's libsuitesparse-dev)") from e

# simplicial LDLᵀ with AMD: on the 9,409-vertex ICT face bi-Laplacian it solves three right-hand sides
# in ~5 ms against ~7-9 ms for the supernodal variants (measured, see BENCHMARKS.md)
DEFAULT_MODE = "simplicial"
DEFAULT_ORDERING = "amd"


class FactorCache:
    """CHOLMOD factors of symmetric positive definite matrices that share one sparsity pattern."""

    def __init__(self, pattern: sp.spmatrix, max_factors=8, mode=DEFAULT_MODE, ordering=DEFAULT_ORDERING):
        pattern = sp.csc_matrix(pattern)
        self.shape = pattern.shape
        self._analysis = cholmod.analyze(pattern, mode=mode, ordering_method=ordering)
        self._factors = OrderedDict()
        self._lock = threading.Lock()
        self.max_factors = int(max_factors)
        self.hits = 0
        self.factorisations = 0

    def factor(self, key, build_matrix):
        """The factor stored under `key`, or a new numeric factorisation of `build_matrix()` (a sparse
        SPD matrix with the analysed pattern) stored under it. Returns (factor, was_cached)."""
        with self._lock:
            return self._factor(key, build_matrix)

    def _factor(self, key, build_matrix):
        f = self._factors.get(key)
        if f is not None:
            self._factors.move_to_end(key)
            self.hits += 1
            return f, True
        A = sp.csc_matrix(build_matrix())
        if A.shape != self.shape:
            raise ValueError(f"matrix shape {A.shape} differs from the analysed {self.shape}")
        try:
            f = self._analysis.cholesky(A)
        except cholmod.CholmodNotPositiveDefiniteError as e:
            raise ValueError("the system matrix is not positive definite (no constraint or anchor holds "
                             "some part of the mesh)") from e
        self.factorisations += 1
        self._factors[key] = f
        while len(self._factors) > self.max_factors:
            self._factors.popitem(last=False)
        return f, False

    def solve(self, key, build_matrix, rhs):
        """Solve A x = rhs (rhs (n,) or (n, k)) with the factor under `key`; returns (x, was_cached)."""
        with self._lock:
            f, cached = self._factor(key, build_matrix)
            return f(np.asfortranarray(rhs, dtype=float)), cached
