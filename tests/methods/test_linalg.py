"""The shared closed-form solver against independent solutions (lstsq on the stacked system, KKT)."""

from __future__ import annotations

import pytest
import torch

from circuits.methods.linalg import column_angle_deg, relative_residual, solve_edit


def _random(out: int, inp: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(out, inp, generator=g, dtype=torch.float64),
            torch.randn(inp, n, generator=g, dtype=torch.float64),
            torch.randn(out, n, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("reg", [0.5, 1.0, 3.0])
def test_ridge_equals_lstsq_on_the_stacked_system(reg: float) -> None:
    w0, a, b = _random(6, 10, 14)
    got = solve_edit(w0, a, b, reg=reg).weight
    # argmin ||W A - B||^2 + reg ||W - W0||^2  <=>  [A^T; sqrt(reg) I] W^T = [B^T; sqrt(reg) W0^T]
    lhs = torch.cat([a.T, reg**0.5 * torch.eye(10, dtype=torch.float64)])
    rhs = torch.cat([b.T, reg**0.5 * w0.T])
    expected = torch.linalg.lstsq(lhs, rhs).solution.T
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_exact_solution_equals_kkt_of_the_constrained_problem() -> None:
    w0, a, b = _random(5, 12, 4)  # 4 columns < 12 features: full column rank, exact solution exists
    solution = solve_edit(w0, a, b, reg=0.0)
    # min ||w - w0||^2 s.t. A^T w = b, row by row: [[2I, A], [A^T, 0]] [w; mu] = [2 w0; b]
    kkt = torch.zeros(16, 16, dtype=torch.float64)
    kkt[:12, :12] = 2 * torch.eye(12, dtype=torch.float64)
    kkt[:12, 12:] = a
    kkt[12:, :12] = a.T
    rhs = torch.cat([2 * w0.T, b.T])  # one right-hand side per row of W
    expected = torch.linalg.solve(kkt, rhs)[:12].T
    torch.testing.assert_close(solution.weight, expected, rtol=1e-10, atol=1e-10)
    assert solution.exact and solution.residual < 1e-12
    assert solution.solver == "exact"


def test_rank_deficient_inputs_give_the_least_squares_solution_nearest_w0() -> None:
    w0, a, _ = _random(4, 3, 8)  # 8 columns in 3 dimensions: no exact solution
    b = torch.randn(4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    solution = solve_edit(w0, a, b, reg=0.0)
    assert not solution.exact and solution.rank == 3 and "least squares" in solution.solver
    expected = torch.linalg.lstsq(a.T, b.T).solution.T  # unique: A has full row rank
    torch.testing.assert_close(solution.weight, expected, rtol=1e-9, atol=1e-9)
    assert solution.residual == pytest.approx(relative_residual(expected, a, b))
    assert solution.residual > 0.01


def test_residual_and_angle_helpers() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert column_angle_deg(x, y) == pytest.approx(45.0)
    assert relative_residual(torch.eye(2), x, x) == 0.0


def test_bad_shapes_are_named() -> None:
    w0, a, b = _random(4, 3, 5)
    with pytest.raises(ValueError, match="needs inputs"):
        solve_edit(w0, a.T, b)


@pytest.mark.parametrize("columns", [3, 12, 40])  # tall, square-ish and wide feature matrices
@pytest.mark.parametrize("deficient", [False, True])
def test_anchor_map_equals_the_weight_space_solutions(columns: int, deficient: bool) -> None:
    """``W_o M`` equals ``solve_edit``'s solution, exact/least-squares and ridge, whichever Gram matrix it uses."""
    from circuits.methods.linalg import AnchorMap

    generator = torch.Generator().manual_seed(columns)
    x = torch.randn(12, columns, generator=generator, dtype=torch.float64)
    if deficient:  # repeated columns, as repeated [EoT]s give
        x[:, 1::2] = x[:, :1]
    y = torch.randn(12, columns, generator=generator, dtype=torch.float64)
    w0 = torch.randn(7, 12, generator=generator, dtype=torch.float64)
    for reg in (0.0, 0.5):
        amap = AnchorMap.fit(x, y, reg=reg)
        expected = solve_edit(w0, x, w0 @ y, reg=reg)
        torch.testing.assert_close(w0 + amap.delta(w0), expected.weight, rtol=1e-9, atol=1e-9)
        assert amap.rank == expected.rank


def _with_singular_values(rows: int, cols: int, values: list[float], seed: int = 3) -> torch.Tensor:
    """A ``rows x cols`` matrix whose singular values are exactly ``values`` (random orthonormal frames)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, len(values), generator=generator, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(cols, len(values), generator=generator, dtype=torch.float64)).Q
    return u @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize("shape", [(12, 5), (5, 12)])  # tall (X^T X path) and wide (X X^T path)
def test_pinv_cut_off_is_rtol_times_the_largest_singular_value(shape: tuple[int, int]) -> None:
    """The documented rule: keep sigma_i >= rtol * sigma_max (on the Gram matrix: lambda_i >= rtol^2 lambda_max).

    The singular values straddle both readings: with rtol = 1e-3, 1e-2 and 2e-3 are kept, 1e-4 is cut;
    comparing eigenvalues against rtol (not rtol^2) would also cut 1e-2 and 2e-3 (rank 2, not 4).
    """
    from circuits.methods.linalg import DEFAULT_RTOL, AnchorMap, numerical_rank, pinv

    assert DEFAULT_RTOL == 1e-3
    matrix = _with_singular_values(*shape, [1.0, 0.3, 1e-2, 2e-3, 1e-4])
    inverse, rank = pinv(matrix, rtol=1e-3)
    assert rank == 4 == int(torch.linalg.matrix_rank(matrix, rtol=1e-3)) == numerical_rank(matrix, 1e-3)
    torch.testing.assert_close(inverse, torch.linalg.pinv(matrix, rtol=1e-3), rtol=1e-8, atol=1e-8)
    assert pinv(matrix, rtol=3e-2)[1] == 2  # 1e-2 < 3e-2: cut
    torch.testing.assert_close(pinv(matrix, rtol=3e-2)[0], torch.linalg.pinv(matrix, rtol=3e-2), rtol=1e-8, atol=1e-8)
    if shape[0] > 8:  # as features (d = 12 rows, 5 token columns), AnchorMap keeps the same rank
        anchors = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        assert AnchorMap.fit(matrix, anchors, rtol=1e-3).rank == 4
