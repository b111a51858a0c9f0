"""The closed-form solvers every editing method shares (UCE, ErasePro, TRCE stage 1).

All three change a projection ``W_o`` (``out x in``) so that it maps input features ``A``
(``in x N``, one column per token) to wanted outputs ``B`` (``out x N``):

- **ridge** (UCE, ErasePro Eq. 1-2): ``argmin ||W A - B||^2 + reg ||W - W_o||^2``
  ``= (B A^T + reg W_o)(A A^T + reg I)^-1``. With ``B = W_o Y`` this is Eq. 2.
- **nearest exact** (``reg = 0``; ErasePro Eq. 4-5, TRCE Eq. 4-5): the smallest change of ``W_o``
  that solves ``W A = B`` exactly, ``W_o + (B - W_o A) A^+``. When ``A`` has full column rank this is
  ErasePro's Eq. 5, ``A^+ = (A^T A)^-1 A^T``; when ``A A^T`` is invertible it equals TRCE's Eq. 5,
  ``B A^T (A A^T)^-1``. When neither holds (more token columns than features, or repeated columns)
  the system has no exact solution; the pseudo-inverse gives the least-squares solution nearest to
  ``W_o``, and the residual it leaves is reported, never hidden.

Solutions are computed in float64 and returned in ``W_o``'s dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

#: singular values below ``rtol * largest`` count as zero in the pseudo-inverse: directions the features
#: barely span would otherwise get updates up to 1/rtol times the weight (repeated [EoT] columns)
DEFAULT_RTOL = 1e-3


@dataclass(frozen=True)
class EditSolution:
    """A solved weight and what it achieves.

    ``residual`` is ``||W A - B||_F / ||B||_F`` (0 = exact alignment); ``rank`` the numerical rank of
    ``A`` and ``columns`` its column count; ``solver`` names the formula used.
    """

    weight: Float[Tensor, "out inp"]
    delta: Float[Tensor, "out inp"]
    residual: float
    rank: int
    columns: int
    solver: str

    @property
    def exact(self) -> bool:
        """Did an exact solution exist (``A`` of full column rank)?"""
        return self.rank == self.columns


def solve_edit(
    weight: Float[Tensor, "out inp"],
    inputs: Float[Tensor, "inp n"],
    targets: Float[Tensor, "out n"],
    *,
    reg: float = 0.0,
    rtol: float = DEFAULT_RTOL,
) -> EditSolution:
    """The weight that maps ``inputs`` to ``targets`` (ridge with ``reg > 0``, nearest exact with ``reg = 0``)."""
    if weight.ndim != 2 or inputs.ndim != 2 or targets.ndim != 2:
        raise ValueError(
            f"solve_edit: weight, inputs, targets must be 2-D, got {weight.ndim}, {inputs.ndim}, {targets.ndim}"
        )
    if inputs.shape[0] != weight.shape[1] or targets.shape[0] != weight.shape[0] or inputs.shape[1] != targets.shape[1]:
        raise ValueError(
            f"solve_edit: weight {tuple(weight.shape)} needs inputs [{weight.shape[1]}, N] and targets "
            f"[{weight.shape[0]}, N]; got {tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    if reg < 0:
        raise ValueError(f"solve_edit: reg={reg} must be >= 0")
    w0, a, b = (t.detach().to(torch.float64) for t in (weight, inputs, targets))
    inverse, rank = pinv(a, rtol)
    if reg > 0:
        gram = a @ a.T + reg * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
        solved = torch.linalg.solve(gram, (b @ a.T + reg * w0).T).T  # gram is symmetric
        solver = f"ridge (reg={reg:g})"
    else:
        solved = w0 + (b - w0 @ a) @ inverse
        solver = "exact" if rank == a.shape[1] else f"least squares (rank {rank} < {a.shape[1]} columns)"
    return EditSolution(
        weight=solved.to(weight.dtype),
        delta=(solved - w0).to(weight.dtype),
        residual=relative_residual(solved, a, b),
        rank=rank,
        columns=a.shape[1],
        solver=solver,
    )


def _small_gram(a: Tensor) -> tuple[Tensor, bool]:
    """``A A^T`` when ``A`` is wide (more columns than rows), else ``A^T A``: the smaller Gram matrix."""
    wide = a.shape[1] > a.shape[0]
    return (a @ a.T if wide else a.T @ a), wide


def _kept(values: Tensor, rtol: float) -> Tensor:
    """Eigenvalues of a Gram matrix that count: ``sigma_i >= rtol * sigma_max`` (``lambda_i >= rtol^2 lambda_max``)."""
    top = float(values.max()) if values.numel() else 0.0
    if top <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    return values > max(top * rtol**2, top * 1e-15)


def _gram_pinv(gram: Tensor, rtol: float) -> tuple[Tensor, int]:
    """Truncated pseudo-inverse of a symmetric PSD Gram matrix, and how many eigenvalues were kept."""
    values, vectors = torch.linalg.eigh(gram)
    keep = _kept(values, rtol)
    return (vectors[:, keep] / values[keep]) @ vectors[:, keep].T, int(keep.sum())


def pinv(matrix: Float[Tensor, "d n"], rtol: float = DEFAULT_RTOL) -> tuple[Float[Tensor, "n d"], int]:
    """Truncated pseudo-inverse and numerical rank, via the eigendecomposition of the smaller Gram matrix.

    ``sigma_i >= rtol * sigma_max`` is kept (``lambda_i >= rtol^2 lambda_max``). Working on the
    ``min(d, n)``-sized Gram matrix instead of an SVD of the ``d x n`` matrix is what keeps an SD-sized
    fit (768 features, 1,540 token columns) at a fraction of a second per layer.
    """
    a = matrix.to(torch.float64)
    gram, wide = _small_gram(a)
    inverse, rank = _gram_pinv(gram, rtol)
    return (a.T @ inverse if wide else inverse @ a.T), rank


@dataclass(frozen=True)
class AnchorMap:
    """The closed forms of UCE, ErasePro and TRCE stage 1 as one ``d x d`` matrix ``M``: ``W* = W_o M``.

    Every method here wants ``W X ~ W_o Y`` (targets are the original projection of anchor features),
    so the solution is linear in ``W_o``: ridge ``M = (Y X^T + reg I)(X X^T + reg I)^-1``, nearest exact
    ``M = I + (Y - X) X^+``. ``M`` is computed once per feature set and applied to every projection that
    reads those features (all 32 cross-attention K/V of SD1.5 share one), each at the cost of one matmul.
    """

    matrix: Float[Tensor, "d d"]
    rank: int
    columns: int
    solver: str

    @classmethod
    def fit(cls, inputs: Tensor, anchors: Tensor, *, reg: float = 0.0, rtol: float = DEFAULT_RTOL) -> "AnchorMap":
        if inputs.shape != anchors.shape:
            raise ValueError(f"AnchorMap: inputs {tuple(inputs.shape)} and anchors {tuple(anchors.shape)} differ")
        if reg < 0:
            raise ValueError(f"AnchorMap: reg={reg} must be >= 0")
        x, y = inputs.to(torch.float64), anchors.to(torch.float64)
        eye = torch.eye(x.shape[0], dtype=torch.float64, device=x.device)
        gram, wide = _small_gram(x)
        if reg > 0:
            rank = int(_kept(torch.linalg.eigvalsh(gram), rtol).sum())  # reported, not used by the ridge solve
            features_gram = gram if wide else x @ x.T
            matrix = torch.linalg.solve(features_gram + reg * eye, y @ x.T + reg * eye, left=False)
            solver = f"ridge (reg={reg:g})"
        else:
            # M = I + (Y - X) X^+, with X^+ = X^T (X X^T)^+ (wide X) or (X^T X)^+ X^T: products in the order
            # that never forms the N x d pseudo-inverse itself
            inverse, rank = _gram_pinv(gram, rtol)
            matrix = eye + (((y - x) @ x.T) @ inverse if wide else ((y - x) @ inverse) @ x.T)
            solver = "exact" if rank == x.shape[1] else f"least squares (rank {rank} < {x.shape[1]} columns)"
        return cls(matrix, rank, x.shape[1], solver)

    def delta(self, weight: Float[Tensor, "out d"]) -> Float[Tensor, "out d"]:
        """``W_o M - W_o`` in the weight's dtype (the ``WeightEdit`` delta)."""
        shift = self.matrix - torch.eye(self.matrix.shape[0], dtype=torch.float64, device=self.matrix.device)
        if weight.dtype == torch.float64:
            return weight.detach() @ shift
        return weight.detach() @ shift.to(weight.dtype)

    def solution(self, weight: Tensor, inputs: Tensor, anchors: Tensor) -> EditSolution:
        """The full :class:`EditSolution` (residual over ``inputs``/``anchors``), for tests and small layers."""
        delta = self.delta(weight)
        w0 = weight.detach().to(torch.float64)
        residual = relative_residual(w0 + delta.to(torch.float64), inputs, w0 @ anchors.to(torch.float64))
        return EditSolution(weight.detach() + delta, delta, residual, self.rank, self.columns, self.solver)


def quadratic_norm(weight: Tensor, gram: Tensor) -> float:
    """``||W R||_F`` from ``G = R R^T``: ``sqrt(sum(W * (W G)))`` (an ``out x d x d`` product, not ``out x d x n``)."""
    w = weight.detach().to(gram.dtype)
    return float(torch.sum(w * (w @ gram)).clamp_min(0.0).sqrt())


def quadratic_norms(weight: Tensor, grams: Sequence[Tensor]) -> list[float]:
    """``||W R_i||_F`` for several ``G_i = R_i R_i^T`` of the same size: ``sqrt(<G_i, W^T W>)``, with the
    ``out x d x d`` product ``W^T W`` formed once for all of them (one row of a trace reads three)."""
    if not grams:
        return []
    w = weight.detach().to(grams[0].dtype)
    outer = w.T @ w
    return [float(torch.sum(gram * outer).clamp_min(0.0).sqrt()) for gram in grams]


def relative_residual(weight: Tensor, inputs: Tensor, targets: Tensor) -> float:
    """``||W A - B||_F / ||B||_F`` in float64 (0 when ``B`` is zero and matched)."""
    w, a, b = (t.detach().to(torch.float64) for t in (weight, inputs, targets))
    scale = torch.linalg.matrix_norm(b)
    error = torch.linalg.matrix_norm(w @ a - b)
    return float(error / scale) if scale > 0 else float(error)


def numerical_rank(matrix: Tensor, rtol: float = DEFAULT_RTOL) -> int:
    return int(torch.linalg.matrix_rank(matrix.to(torch.float64), rtol=rtol))


def column_angle_deg(x: Float[Tensor, "d n"], y: Float[Tensor, "d n"]) -> float:
    """Mean angle in degrees between matching columns of ``x`` and ``y``."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    cos = torch.nn.functional.cosine_similarity(x, y, dim=0).clamp(-1.0, 1.0)
    return float(torch.rad2deg(torch.arccos(cos)).mean())


def frobenius_distance(x: Tensor, y: Tensor) -> float:
    return float(torch.linalg.matrix_norm(x.to(torch.float64) - y.to(torch.float64)))
