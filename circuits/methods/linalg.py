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
    rank = numerical_rank(a, rtol)
    if reg > 0:
        gram = a @ a.T + reg * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
        solved = torch.linalg.solve(gram, (b @ a.T + reg * w0).T).T  # gram is symmetric
        solver = f"ridge (reg={reg:g})"
    else:
        solved = w0 + (b - w0 @ a) @ torch.linalg.pinv(a, rtol=rtol)
        solver = "exact" if rank == a.shape[1] else f"least squares (rank {rank} < {a.shape[1]} columns)"
    return EditSolution(
        weight=solved.to(weight.dtype),
        delta=(solved - w0).to(weight.dtype),
        residual=relative_residual(solved, a, b),
        rank=rank,
        columns=a.shape[1],
        solver=solver,
    )


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
