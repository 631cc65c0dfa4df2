"""Tests of PB2's time-varying kernel (a scikit-learn kernel) and the GP fit built on it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone  # type: ignore[import-untyped]

from genepool.policy._pb2_kernel import (
    BOUNDS,
    DEFAULTS,
    TimeVaryingKernel,
    condition,
    fit_gp,
    gp_kernel,
    kernel_params,
    predict,
)


def inputs(n: int, *, numeric: int = 2, categorical: int = 0, seed: int = 0) -> np.ndarray:
    """``[t, x..., h...]``: integer times, unit-cube values and category codes."""
    rng = np.random.default_rng(seed)
    t = rng.integers(-10, 1, size=(n, 1)).astype(float)
    x = rng.random((n, numeric))
    h = rng.integers(0, 3, size=(n, categorical)).astype(float)
    return np.hstack([t, x, h])


def test_the_kernel_is_the_papers_product():
    k = TimeVaryingKernel(epsilon=0.2, length_scale=0.5, category_scale=2.0, n_categorical=1)
    a = np.array([[0.0, 0.1, 0.3, 1.0]])
    b = np.array([[-3.0, 0.4, 0.7, 2.0]])
    expected = (
        (1 - 0.2) ** (3 / 2) * np.exp(-(0.3**2 + 0.4**2) / (2 * 0.5**2)) * np.exp(-1 / (2 * 2.0**2))
    )
    assert k(a, b)[0, 0] == pytest.approx(expected, rel=1e-12)
    assert k(a)[0, 0] == pytest.approx(1.0)
    assert k(b, a)[0, 0] == pytest.approx(expected)


def test_a_longer_lag_means_a_weaker_correlation():
    k = TimeVaryingKernel(epsilon=0.1, length_scale=0.3)
    same = np.array([[0.0, 0.5]])
    past = np.array([[-t, 0.5] for t in (0.0, 1.0, 5.0, 20.0, 100.0)])
    row = k(same, past)[0]
    assert row[0] == pytest.approx(1.0)
    assert np.all(np.diff(row) < 0)
    assert row[-1] == pytest.approx(0.9**50)


@pytest.mark.parametrize("categorical", [0, 2])
def test_the_gradient_matches_finite_differences(categorical: int):
    X = inputs(12, categorical=categorical)
    k = TimeVaryingKernel(
        epsilon=0.3, length_scale=0.4, category_scale=1.5, n_categorical=categorical
    )
    K, grad = k(X, eval_gradient=True)
    assert np.allclose(K, k(X))
    assert grad.shape == (12, 12, k.n_dims)
    assert k.n_dims == (3 if categorical else 2)  # category_scale fitted only with categories
    h = 1e-6
    for i in range(k.n_dims):
        up, down = k.theta.copy(), k.theta.copy()
        up[i] += h
        down[i] -= h
        numeric = (k.clone_with_theta(up)(X) - k.clone_with_theta(down)(X)) / (2 * h)
        assert np.allclose(grad[:, :, i], numeric, atol=1e-7), k.hyperparameters[i].name


def test_the_composite_gradient_matches_finite_differences():
    X = inputs(10, categorical=1, seed=3)
    kernel = gp_kernel({**DEFAULTS, "epsilon": 0.25}, n_categorical=1)
    _, grad = kernel(X, eval_gradient=True)
    h = 1e-6
    for i in range(kernel.n_dims):
        up, down = kernel.theta.copy(), kernel.theta.copy()
        up[i] += h
        down[i] -= h
        numeric = (kernel.clone_with_theta(up)(X) - kernel.clone_with_theta(down)(X)) / (2 * h)
        assert np.allclose(grad[:, :, i], numeric, atol=1e-7)


def test_it_is_a_scikit_learn_kernel():
    k = TimeVaryingKernel(epsilon=0.2, length_scale=0.5, n_categorical=1)
    assert clone(k) == k
    assert {h.name for h in k.hyperparameters} == {"category_scale", "epsilon", "length_scale"}
    assert np.allclose(np.exp(k.bounds[1]), BOUNDS["epsilon"])
    assert np.allclose(k.diag(inputs(4, categorical=1)), 1.0)
    assert k.is_stationary()
    assert "epsilon=0.2" in repr(k)
    with pytest.raises(ValueError, match="only defined when Y is None"):
        k(inputs(3), inputs(2), eval_gradient=True)
    X = inputs(30, categorical=1, seed=2)
    eigenvalues = np.linalg.eigvalsh(k(X))
    assert eigenvalues.min() > -1e-9  # positive semi-definite


def noisy_data(n: int, *, drift: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Improvements over one value: a bump whose place moves over time with ``drift``."""
    rng = np.random.default_rng(seed)
    t = np.repeat(np.arange(-n // 10 + 1, 1), 10)[:n].astype(float)
    x = rng.random(n)
    centre = 0.5 + (0.4 * np.sin(t) if drift else 0.0)
    y = np.exp(-((x - centre) ** 2) / 0.02) + 0.05 * rng.standard_normal(n)
    y = (y - y.mean()) / y.std()
    return np.column_stack([t, x]), y


def test_the_fit_forgets_faster_when_the_function_moves():
    steady = fit_gp(*noisy_data(120, drift=False), n_categorical=0, start=None, fit_rows=250)
    moving = fit_gp(*noisy_data(120, drift=True), n_categorical=0, start=None, fit_rows=250)
    assert moving[1]["epsilon"] > 10 * steady[1]["epsilon"]
    assert moving[1]["epsilon"] > 0.05


def test_a_warm_start_keeps_the_fit_and_reports_bounds():
    X, y = noisy_data(120, drift=False)
    _, cold, at_bound = fit_gp(X, y, n_categorical=0, start=None, fit_rows=250)
    assert set(cold) == set(BOUNDS)
    assert all(BOUNDS[n][0] <= v <= BOUNDS[n][1] for n, v in cold.items())
    assert "category_scale" not in at_bound  # not fitted without categories
    _, warm, _ = fit_gp(X, y, n_categorical=0, start=cold, fit_rows=250)
    for name in ("amplitude", "length_scale", "noise"):
        assert warm[name] == pytest.approx(cold[name], rel=0.05)
    # a start outside the bounds is moved inside them
    _, moved, _ = fit_gp(X, y, n_categorical=0, start={**cold, "noise": 1e9}, fit_rows=250)
    assert moved["noise"] <= BOUNDS["noise"][1]


def test_the_fit_uses_the_last_rows_and_conditions_on_all():
    X, y = noisy_data(200, drift=False)
    model, params, _ = fit_gp(X, y, n_categorical=0, start=None, fit_rows=50)
    assert model.X_train_.shape[0] == 200
    assert kernel_params(model.kernel_) == params
    again = condition(X, y, params, n_categorical=0)
    mean, std = predict(model, X[:5])
    mean2, std2 = predict(again, X[:5])
    assert np.allclose(mean, mean2)
    assert np.allclose(std, std2)
    assert np.all(std >= 0)
