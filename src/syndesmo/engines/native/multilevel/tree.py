"""Block elimination on the tree of nested random effects: linear in the number of rows.

The random effects of a model with nested grouping factors form a tree: level 0 is
either one dense block holding the random effects of crossed factors with few levels
(readers, visits), or the coarsest nested factor (patients); every further level is a
factor nested in the one above (VUs within patients, readings within VUs). Node ``g``
of level ``ℓ`` holds ``d_ℓ`` spherical random effects; row ``i`` reaches its node at
every level through ``a_iℓ = Λ_ℓᵀ z_iℓ`` (``z_iℓ`` the row's random-effect columns), so
``η_i = x_iβ + Σ_ℓ a_iℓ · u_{ℓ,g_ℓ(i)}``.

The negative Hessian of the joint log density in ``u`` is ``H = I + Σ_i v_i a_i a_iᵀ``.
Its only non-zero blocks join a node with itself and with its ancestors. Eliminating
the finest level first, a node's Schur update touches only its ancestors, which are
already joined: no fill-in. This module holds the elimination (log-determinant), the
solution of ``H x = r`` and the blocks of ``H⁻¹`` on the same pattern (the selected
inverse, needed by the exact gradient), all as vectorised segment sums.

Rows are sorted so that the rows of every node are contiguous and nodes are numbered in
that order at every level; segment sums are products with sparse indicator matrices.

Arrays carry a batch axis ``B`` (parameter vectors evaluated together) after the row or
node axis: row arrays are ``(n, B, …)``, node arrays ``(G_ℓ, B, …)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from syndesmo.fitting.random_effects import ReStructure


@dataclass
class Level:
    """One level of the tree.

    ``node`` maps sorted rows to node numbers; ``row_starts`` are the first rows of
    the nodes; ``anc[k]`` (for ``k < ℓ``) the ancestor of every node at level ``k``
    and ``node_starts[k]`` the first node of every level-``k`` node's descendants
    here. ``Z`` (``(n, d)``) holds the rows' random-effect columns in level
    coordinates; ``theta_map`` (``(j, r, c)`` arrays) places θ into ``Λ_ℓ``.
    """

    n_nodes: int
    d: int
    node: np.ndarray
    row_starts: np.ndarray
    anc: list[np.ndarray]
    node_starts: list[np.ndarray]
    Z: np.ndarray
    theta_map: tuple[np.ndarray, np.ndarray, np.ndarray]
    codes: np.ndarray | None = None  # original factor code of every node (None: dense block)
    terms: tuple[int, ...] = ()
    term_offsets: tuple[int, ...] = ()


class Tree:
    """Levels of nested random effects over sorted rows (see the module docstring)."""

    def __init__(self, levels: list[Level], n: int, order: np.ndarray) -> None:
        self.levels = levels
        self.n = n
        self.order = order  # sorted row k is input row order[k]
        self._cache: dict = {}

    @property
    def depth(self) -> int:
        return len(self.levels)

    @property
    def n_units(self) -> int:
        """Independent blocks of ``H`` (the nodes of level 0)."""
        return self.levels[0].n_nodes

    def seg_rows(self, lev: int, a: np.ndarray) -> np.ndarray:
        """Sum row values within the nodes of level ``lev``: ``(n, …) → (G, …)``."""
        L = self.levels[lev]
        if L.n_nodes == 1:
            return a.sum(axis=0, keepdims=True)
        return _segment_sum(self._row_sums(lev), a)

    def seg_nodes(self, lev: int, k: int, a: np.ndarray) -> np.ndarray:
        """Sum level-``lev`` node values within their level-``k`` ancestors."""
        if k == lev:
            return a
        if self.levels[k].n_nodes == 1:
            return a.sum(axis=0, keepdims=True)
        return _segment_sum(self._node_sums(lev, k), a)

    # Segment sums as products with sparse indicator matrices: several times faster
    # than np.add.reduceat on arrays with trailing axes.
    def _row_sums(self, lev: int) -> sp.csr_matrix:
        key = ("rows", lev)
        if key not in self._cache:
            L = self.levels[lev]
            self._cache[key] = _indicator(L.node, L.n_nodes)
        return self._cache[key]

    def _node_sums(self, lev: int, k: int) -> sp.csr_matrix:
        key = ("nodes", lev, k)
        if key not in self._cache:
            self._cache[key] = _indicator(self.levels[lev].anc[k], self.levels[k].n_nodes)
        return self._cache[key]

    def to_rows(self, lev: int, a: np.ndarray) -> np.ndarray:
        """Node values of level ``lev`` for every row."""
        return a[self.levels[lev].node]

    def to_nodes(self, lev: int, k: int, a: np.ndarray) -> np.ndarray:
        """Level-``k`` node values for every node of level ``lev`` (``k ≤ lev``)."""
        if k == lev:
            return a
        return a[self.levels[lev].anc[k]]

    def lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        """``Λ_ℓ`` per level, ``(B, d, d)``, from ``theta`` ``(B, n_theta)``."""
        out = []
        for L in self.levels:
            lam = np.zeros((theta.shape[0], L.d, L.d))
            j, r, c = L.theta_map
            lam[:, r, c] = theta[:, j]
            out.append(lam)
        return out

    def row_factors(self, lams: list[np.ndarray]) -> list[np.ndarray]:
        """``a_iℓ = Λ_ℓᵀ z_iℓ`` per level, ``(n, B, d)``."""
        out = []
        for L, lam in zip(self.levels, lams, strict=True):
            if L.d == 1:
                out.append(L.Z[:, None, :] * lam[None, :, 0, :])
            else:
                out.append(np.einsum("nr,brc->nbc", L.Z, lam))
        return out


def _indicator(codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
    n = codes.size
    return sp.csr_matrix((np.ones(n), codes, np.arange(n + 1)), shape=(n, n_groups)).T.tocsr()


def _segment_sum(S: sp.csr_matrix, a: np.ndarray) -> np.ndarray:
    flat = a.reshape(a.shape[0], -1)
    return np.asarray(S @ flat).reshape((S.shape[0], *a.shape[1:]))


# --------------------------------------------------------------------------------------
# Construction from a random-effect structure
# --------------------------------------------------------------------------------------


def _first_positions(key: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, key[1:] != key[:-1]])


def build_tree(structure: ReStructure) -> Tree:
    """The tree of ``structure``: levels, sorted row order, θ placement."""
    n = structure.n_rows
    terms = structure.terms
    chain = [structure.factors[f] for f in structure.chain]
    crossed = [structure.factors[f] for f in structure.crossed]

    # sort rows by the chain codes, coarse to fine
    keys = [f.codes for f in chain]
    order = np.lexsort(keys[::-1]) if keys else np.arange(n)
    levels: list[Level] = []

    def theta_offsets() -> dict[int, int]:
        off, out = 0, {}
        for k, t in enumerate(terms):
            out[k] = off
            off += t.n_theta
        return out

    toff = theta_offsets()

    def term_map(k: int, base: int) -> list[tuple[int, int, int]]:
        """(θ index, row, col) of term ``k``'s Λ placed at offset ``base``."""
        t = terms[k]
        out = []
        j = toff[k]
        for c in range(t.q):
            for r in range(c, t.q):
                out.append((j, base + r, base + c))
                j += 1
        return out

    def as_map(entries: list[tuple[int, int, int]]):
        arr = np.array(entries, dtype=np.int64).reshape(-1, 3)
        return arr[:, 0], arr[:, 1], arr[:, 2]

    if crossed:
        # one dense block: for every crossed factor, every level, its terms' columns
        blocks = []
        entries: list[tuple[int, int, int]] = []
        base = 0
        cols = []
        for f in crossed:
            width = sum(terms[k].q for k in f.terms)
            codes = f.codes[order]
            for g in range(f.n_levels):
                off = base + g * width
                inner = 0
                for k in f.terms:
                    entries.extend(term_map(k, off + inner))
                    inner += terms[k].q
            # rows' columns at their level's position
            Zf = np.zeros((n, f.n_levels * width))
            inner = 0
            for k in f.terms:
                t = terms[k]
                for a in range(t.q):
                    Zf[np.arange(n), codes * width + inner + a] = t.Z[order, a]
                inner += t.q
            cols.append(Zf)
            blocks.append(f)
            base += f.n_levels * width
        Z0 = np.hstack(cols)
        levels.append(
            Level(
                n_nodes=1,
                d=Z0.shape[1],
                node=np.zeros(n, dtype=np.int64),
                row_starts=np.zeros(1, dtype=np.int64),
                anc=[],
                node_starts=[],
                Z=Z0,
                theta_map=as_map(entries),
                codes=None,
                terms=tuple(k for f in crossed for k in f.terms),
            )
        )

    for f in chain:
        codes = f.codes[order]
        starts = _first_positions(codes)
        node = np.cumsum(np.r_[True, codes[1:] != codes[:-1]]) - 1
        lev = len(levels)
        anc = [levels[k].node[starts] for k in range(lev)]
        node_starts = [_first_positions(a) for a in anc]
        entries = []
        Zs = []
        offsets = []
        inner = 0
        for k in f.terms:
            entries.extend(term_map(k, inner))
            Zs.append(terms[k].Z[order])
            offsets.append(inner)
            inner += terms[k].q
        levels.append(
            Level(
                n_nodes=int(starts.size),
                d=inner,
                node=node.astype(np.int64),
                row_starts=starts,
                anc=anc,
                node_starts=node_starts,
                Z=np.ascontiguousarray(np.hstack(Zs)),
                theta_map=as_map(entries),
                codes=codes[starts],
                terms=f.terms,
                term_offsets=tuple(offsets),
            )
        )
    return Tree(levels, n, order)


# --------------------------------------------------------------------------------------
# Small dense blocks (d = 1 is by far the most common: elementwise)
# --------------------------------------------------------------------------------------


def mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched ``a @ b`` over the last two axes; elementwise when the inner size is 1."""
    if a.shape[-1] == 1:
        return a * b
    return np.matmul(a, b)


def tr(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def spd_inverse(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse and log-determinant of positive definite blocks ``(…, d, d)``."""
    d = D.shape[-1]
    if d == 1:
        return 1.0 / D, np.log(D[..., 0, 0])
    if d == 2:
        a, b, c = D[..., 0, 0], D[..., 0, 1], D[..., 1, 1]
        det = a * c - b * b
        inv = np.empty_like(D)
        inv[..., 0, 0] = c / det
        inv[..., 1, 1] = a / det
        inv[..., 0, 1] = inv[..., 1, 0] = -b / det
        return inv, np.log(det)
    chol = np.linalg.cholesky(D)
    logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    eye = np.broadcast_to(np.eye(d), D.shape)
    inv = np.linalg.solve(D, eye)
    return 0.5 * (inv + tr(inv)), logdet


def outer_rows(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``w_i a_i b_iᵀ``: ``(n, B)``, ``(n, B, d1)``, ``(n, B, d2)`` → ``(n, B, d1, d2)``."""
    return (w[:, :, None] * a)[:, :, :, None] * b[:, :, None, :]


# --------------------------------------------------------------------------------------
# Factorisation, solves, selected inverse
# --------------------------------------------------------------------------------------


@dataclass
class Factorization:
    """Block elimination of ``H`` (finest level first).

    ``Dinv[ℓ]`` is the inverse of the Schur-updated diagonal block of every node,
    ``E[ℓ][k] = D⁻¹ H_{g, anc_k(g)}`` with the updated off-diagonal blocks, ``Ho`` those
    blocks, ``logdet`` ``(B,)`` the log-determinant of ``H`` and ``logdet_nodes[ℓ]``
    the per-node pieces (``log det D_g``).
    """

    Dinv: list[np.ndarray]
    Ho: list[dict[int, np.ndarray]]
    E: list[dict[int, np.ndarray]]
    logdet: np.ndarray
    logdet_nodes: list[np.ndarray]


def factorize(tree: Tree, a: list[np.ndarray], v: np.ndarray, levels: range | None = None):
    """Eliminate ``H = I + Σ v_i a_i a_iᵀ`` over ``levels`` (default: all).

    With a sub-range ``levels = range(l0, L)`` only the random effects at levels
    ``l0…L-1`` are free (the ancestors are held fixed): the conditional problem used by
    nested adaptive quadrature.
    """
    levels = range(tree.depth) if levels is None else levels
    l0 = levels.start
    B = v.shape[1]
    Hd: dict[int, np.ndarray] = {}
    Ho: list[dict[int, np.ndarray]] = [{} for _ in range(tree.depth)]
    for lev in levels:
        d = tree.levels[lev].d
        Hd[lev] = tree.seg_rows(lev, outer_rows(v, a[lev], a[lev])) + np.eye(d)
        for k in range(l0, lev):
            Ho[lev][k] = tree.seg_rows(lev, outer_rows(v, a[lev], a[k]))
    Dinv: list[np.ndarray] = [np.empty(0)] * tree.depth
    E: list[dict[int, np.ndarray]] = [{} for _ in range(tree.depth)]
    logdet_nodes: list[np.ndarray] = [np.empty(0)] * tree.depth
    logdet = np.zeros(B)
    for lev in reversed(levels):
        inv, ld = spd_inverse(Hd[lev])
        Dinv[lev] = inv
        logdet_nodes[lev] = ld
        logdet += ld.sum(axis=0)
        for k in range(l0, lev):
            E[lev][k] = mm(inv, Ho[lev][k])
        for k in range(l0, lev):
            for k2 in range(k, lev):
                # H_{A_k2, A_k} -= H_{A_k2, g} D⁻¹ H_{g, A_k}
                upd = mm(tr(Ho[lev][k2]), E[lev][k])
                upd = tree.seg_nodes(lev, k2, upd)
                if k2 == k:
                    Hd[k] -= upd
                else:
                    Ho[k2][k] -= upd
    return Factorization(Dinv, Ho, E, logdet, logdet_nodes)


def solve(
    tree: Tree, F: Factorization, r: list[np.ndarray], levels: range | None = None
) -> list[np.ndarray]:
    """Solve ``H x = r``; ``r[ℓ]`` is ``(G_ℓ, B, d_ℓ)`` (not modified)."""
    levels = range(tree.depth) if levels is None else levels
    l0 = levels.start
    r = {lev: r[lev].copy() for lev in levels}
    w: dict[int, np.ndarray] = {}
    for lev in reversed(levels):
        w[lev] = mm(F.Dinv[lev], r[lev][..., None])[..., 0]
        for k in range(l0, lev):
            upd = mm(tr(F.Ho[lev][k]), w[lev][..., None])[..., 0]
            r[k] -= tree.seg_nodes(lev, k, upd)
    x: list[np.ndarray] = [np.empty(0)] * tree.depth
    for lev in levels:
        xl = w[lev]
        for k in range(l0, lev):
            xl = xl - mm(F.E[lev][k], tree.to_nodes(lev, k, x[k])[..., None])[..., 0]
        x[lev] = xl
    return x


@dataclass
class SelectedInverse:
    """Blocks of ``H⁻¹``: ``diag[ℓ]`` ``(G_ℓ, B, d_ℓ, d_ℓ)`` and ``off[ℓ][k]``
    ``(G_ℓ, B, d_ℓ, d_k)``, the block between a node and its level-``k`` ancestor."""

    diag: list[np.ndarray]
    off: list[dict[int, np.ndarray]]


def selected_inverse(tree: Tree, F: Factorization, levels: range | None = None) -> SelectedInverse:
    """``H⁻¹`` on the pattern of ``H`` (Takahashi's recursion, coarsest level first).

    With ``levels = range(l0, L)``: the inverse of the conditional problem's ``H``
    (levels ``l0…`` free), from a factorisation over the same levels.
    """
    depth = tree.depth
    levels = range(depth) if levels is None else levels
    l0 = levels.start
    diag: list[np.ndarray] = [np.empty(0)] * depth
    off: list[dict[int, np.ndarray]] = [{} for _ in range(depth)]
    for lev in levels:
        # Σ_{g, A_k} = −Σ_{k'} E_{k'} Σ_{A_k', A_k}
        for k in range(l0, lev):
            acc = None
            for k2 in range(l0, lev):
                if k2 == k:
                    blk = tree.to_nodes(lev, k, diag[k])
                elif k2 > k:
                    blk = tree.to_nodes(lev, k2, off[k2][k])
                else:
                    blk = tr(tree.to_nodes(lev, k, off[k][k2]))
                term = mm(F.E[lev][k2], blk)
                acc = term if acc is None else acc + term
            off[lev][k] = -acc
        dg = F.Dinv[lev]
        for k in range(l0, lev):
            dg = dg - mm(off[lev][k], tr(F.E[lev][k]))
        diag[lev] = 0.5 * (dg + tr(dg))
    return SelectedInverse(diag, off)


def row_quadratic(
    tree: Tree, S: SelectedInverse, a: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``lev_i = a_iᵀ H⁻¹ a_i`` and ``t_iℓ = (H⁻¹ a_i)`` at the row's own nodes."""
    depth = tree.depth
    t = []
    for lev in range(depth):
        acc = mm(tree.to_rows(lev, S.diag[lev]), a[lev][..., None])[..., 0]
        for k in range(depth):
            if k < lev:
                blk = tree.to_rows(lev, S.off[lev][k])
            elif k > lev:
                blk = tr(tree.to_rows(k, S.off[k][lev]))
            else:
                continue
            acc = acc + mm(blk, a[k][..., None])[..., 0]
        t.append(acc)
    lev_i = sum(np.einsum("nbd,nbd->nb", a[lev], t[lev]) for lev in range(depth))
    return lev_i, t
