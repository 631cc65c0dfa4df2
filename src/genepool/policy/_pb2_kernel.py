"""PB2's time-varying kernel as a scikit-learn kernel, and the Gaussian process built on it.

The kernel of TV-GP-UCB (Bogunovic et al., 2016), which PB2 (Parker-Holder et al., 2020)
uses, on inputs ``(t, x, h)``: ``t`` the time (in rounds), ``x`` the numeric
hyperparameters in the unit cube, ``h`` the codes of the unordered choices (PB2-Mix)::

    k((t, x, h), (t', x', h')) = (1 - eps) ** (|t - t'| / 2)
                                 * exp(-||x - x'||**2 / (2 * length_scale**2))
                                 * exp(-mismatches(h, h') / (2 * category_scale**2))

The first factor forgets old data (``eps`` in (0, 1): the larger, the faster), the second is
the squared exponential, the third an exponentiated Hamming kernel (the squared exponential
on a one-hot encoding): it lets the GP share, or not, what it learns across categories. The
amplitude and the noise come from scikit-learn's own kernels (:func:`gp_kernel`). Every
hyperparameter is fitted by maximising the log marginal likelihood within its bounds
(:func:`fit_gp`), warm-started from the previous fit when one is given.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.spatial.distance import cdist

from genepool._errors import missing_dependency

try:
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
    from sklearn.gaussian_process import GaussianProcessRegressor  # type: ignore[import-untyped]
    from sklearn.gaussian_process.kernels import (  # type: ignore[import-untyped]
        ConstantKernel,
        Hyperparameter,
        Kernel,
        WhiteKernel,
    )
    from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
except ImportError as _err:  # pragma: no cover - the [pb2] extra is missing
    raise missing_dependency("scikit-learn", "pb2", "PB2 (genepool's PB2 explore)") from _err

__all__ = [
    "BOUNDS",
    "DEFAULTS",
    "TimeVaryingKernel",
    "blas_threads",
    "condition",
    "fit_gp",
    "gp_kernel",
    "kernel_params",
    "maximise_ucb",
    "predict",
]

Array = npt.NDArray[np.float64]

#: The fitted parameters' bounds: the data are in the unit cube and the improvements
#: standardised, so these span every sensible fit with a margin.
BOUNDS: dict[str, tuple[float, float]] = {
    "amplitude": (0.05, 20.0),
    "epsilon": (1e-6, 0.9),
    "length_scale": (0.03, 10.0),
    "category_scale": (0.1, 10.0),
    "noise": (1e-4, 10.0),
}
#: Where a fit starts without a previous one.
DEFAULTS: dict[str, float] = {
    "amplitude": 1.0,
    "epsilon": 0.1,
    "length_scale": 0.3,
    "category_scale": 1.0,
    "noise": 0.1,
}
#: The L-BFGS-B iterations of a fit, from the defaults and from a previous fit.
COLD_ITERATIONS, WARM_ITERATIONS = 60, 20
#: The acquisition's random candidates, and the local searches from the best of them.
CANDIDATES, STARTS, STEPS = 256, 2, 15


class TimeVaryingKernel(Kernel):  # type: ignore[misc]
    """PB2's time-varying squared exponential, on ``X = [t, x..., h...]``.

    Column 0 is the time, the last ``n_categorical`` columns are category codes (compared
    for equality only) and the columns between are numeric.

    Args:
        epsilon: The forgetting rate per unit of time, in (0, 1).
        length_scale: The squared exponential's length scale over the numeric columns.
        category_scale: How far apart two different categories are (larger: closer).
        n_categorical: How many trailing columns hold category codes (not fitted).
        epsilon_bounds: The bounds of ``epsilon`` (``"fixed"`` to keep it).
        length_scale_bounds: The bounds of ``length_scale`` (``"fixed"`` to keep it).
        category_scale_bounds: The bounds of ``category_scale`` (fixed without categories).
    """

    def __init__(
        self,
        epsilon: float = 0.1,
        length_scale: float = 0.3,
        category_scale: float = 1.0,
        n_categorical: int = 0,
        epsilon_bounds: Any = BOUNDS["epsilon"],
        length_scale_bounds: Any = BOUNDS["length_scale"],
        category_scale_bounds: Any = BOUNDS["category_scale"],
    ) -> None:
        self.epsilon = epsilon
        self.length_scale = length_scale
        self.category_scale = category_scale
        self.n_categorical = n_categorical
        self.epsilon_bounds = epsilon_bounds
        self.length_scale_bounds = length_scale_bounds
        self.category_scale_bounds = category_scale_bounds

    # sklearn lists hyperparameters in name order: category_scale, epsilon, length_scale
    @property
    def hyperparameter_category_scale(self) -> Any:
        bounds = "fixed" if self.n_categorical == 0 else self.category_scale_bounds
        return Hyperparameter("category_scale", "numeric", bounds)

    @property
    def hyperparameter_epsilon(self) -> Any:
        return Hyperparameter("epsilon", "numeric", self.epsilon_bounds)

    @property
    def hyperparameter_length_scale(self) -> Any:
        return Hyperparameter("length_scale", "numeric", self.length_scale_bounds)

    @overload
    def __call__(
        self, X: Array, Y: Array | None = None, eval_gradient: Literal[False] = False
    ) -> Array: ...

    @overload
    def __call__(
        self, X: Array, Y: Array | None = None, *, eval_gradient: Literal[True]
    ) -> tuple[Array, Array]: ...

    def __call__(
        self, X: Array, Y: Array | None = None, eval_gradient: bool = False
    ) -> Array | tuple[Array, Array]:
        """The kernel matrix ``k(X, Y)`` (``Y = X`` when ``None``), and with
        ``eval_gradient`` its gradient with respect to the log of each fitted parameter."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if Y is None:
            Y = X
        elif eval_gradient:
            raise ValueError("The gradient is only defined when Y is None.")
        else:
            Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
        split = X.shape[1] - self.n_categorical
        eps, scale, cat = float(self.epsilon), float(self.length_scale), float(self.category_scale)
        lag = np.abs(X[:, :1] - Y[:, :1].T)
        squared: Array = cdist(X[:, 1:split], Y[:, 1:split], "sqeuclidean")
        mismatches: Array | None = (
            cdist(X[:, split:], Y[:, split:], "hamming") * self.n_categorical
            if self.n_categorical
            else None
        )
        # the exponent is built in place: these are n x n matrices (W = 1,000 rows)
        K = squared * (-0.5 / scale**2)
        K += lag * (0.5 * np.log1p(-eps))
        if mismatches is not None:
            K -= mismatches * (0.5 / cat**2)
        np.exp(K, out=K)
        if not eval_gradient:
            return K
        grads = []
        if not self.hyperparameter_category_scale.fixed:
            assert mismatches is not None
            grads.append(K * mismatches / cat**2)
        if not self.hyperparameter_epsilon.fixed:
            grads.append(K * lag * (-eps / (2.0 * (1.0 - eps))))
        if not self.hyperparameter_length_scale.fixed:
            grads.append(K * squared / scale**2)
        if not grads:
            return K, np.empty((X.shape[0], X.shape[0], 0))
        return K, np.stack(grads, axis=2)

    def diag(self, X: Array) -> Array:
        """``k(x, x)`` for each row: 1."""
        return np.ones(np.shape(X)[0])

    def is_stationary(self) -> bool:
        """It depends on the inputs' differences only."""
        return True

    def __repr__(self) -> str:
        return (
            f"TimeVaryingKernel(epsilon={self.epsilon:.3g}, length_scale="
            f"{self.length_scale:.3g}, category_scale={self.category_scale:.3g}, "
            f"n_categorical={self.n_categorical})"
        )


def gp_kernel(params: Mapping[str, float], *, n_categorical: int) -> Any:
    """``amplitude * TimeVaryingKernel + noise``, starting at ``params``."""
    return ConstantKernel(params["amplitude"], BOUNDS["amplitude"]) * TimeVaryingKernel(
        epsilon=params["epsilon"],
        length_scale=params["length_scale"],
        category_scale=params["category_scale"],
        n_categorical=n_categorical,
    ) + WhiteKernel(params["noise"], BOUNDS["noise"])


def kernel_params(kernel: Any) -> dict[str, float]:
    """The parameters of a (fitted) :func:`gp_kernel`, by their short names."""
    tv = kernel.k1.k2
    return {
        "amplitude": float(kernel.k1.k1.constant_value),
        "epsilon": float(tv.epsilon),
        "length_scale": float(tv.length_scale),
        "category_scale": float(tv.category_scale),
        "noise": float(kernel.k2.noise_level),
    }


def _inside(params: Mapping[str, float]) -> dict[str, float]:
    """``params`` moved just inside their bounds (a fit may start at one, never beyond)."""
    out = {}
    for name, (low, high) in BOUNDS.items():
        out[name] = float(min(high * 0.999, max(low * 1.001, params[name])))
    return out


def _lbfgsb(iterations: int) -> Any:
    """A scikit-learn optimizer: L-BFGS-B for at most ``iterations`` steps. Stopping early
    is deliberate (a warm start needs few steps), so it never warns."""

    def optimizer(obj_func: Any, initial_theta: Array, bounds: Array) -> tuple[Array, float]:
        result = minimize(
            obj_func,
            initial_theta,
            method="L-BFGS-B",
            jac=True,
            bounds=bounds,
            options={"maxiter": iterations},
        )
        return np.asarray(result.x, dtype=np.float64), float(result.fun)

    return optimizer


def fit_gp(
    X: Array,
    y: Array,
    *,
    n_categorical: int,
    start: Mapping[str, float] | None,
    fit_rows: int,
) -> tuple[Any, dict[str, float], list[str]]:
    """Fit the kernel's parameters on the last ``fit_rows`` rows (warm-started from
    ``start``, a previous fit's :func:`kernel_params`), then condition on every row.

    Returns:
        The fitted ``GaussianProcessRegressor``, its kernel parameters, and the names of
        those that sit at a bound.
    """
    first = _inside(start if start is not None else DEFAULTS)
    iterations = WARM_ITERATIONS if start is not None else COLD_ITERATIONS
    model = GaussianProcessRegressor(
        gp_kernel(first, n_categorical=n_categorical),
        alpha=1e-8,
        optimizer=_lbfgsb(iterations),
        copy_X_train=False,
    )
    with warnings.catch_warnings():
        # a parameter at its bound is a valid fit (eps at its floor: nothing changes over
        # time; the noise at its floor: exact data); it is reported, not warned about
        warnings.filterwarnings(
            "ignore", message="The optimal value found", category=ConvergenceWarning
        )
        model.fit(X[-fit_rows:], y[-fit_rows:])
    params = kernel_params(model.kernel_)
    at_bound = [
        name
        for name, value in params.items()
        if (name != "category_scale" or n_categorical)
        and not BOUNDS[name][0] * 1.01 < value < BOUNDS[name][1] / 1.01
    ]
    if X.shape[0] > fit_rows:
        model = condition(X, y, params, n_categorical=n_categorical)
    return model, params, at_bound


class _Conditioned(GaussianProcessRegressor):  # type: ignore[misc]
    """A GP whose ``fit`` (with ``optimizer=None``) only conditions: scikit-learn would also
    compute the log marginal likelihood there (a second kernel matrix and Cholesky of
    W = 1,000 rows), which nothing here reads (``log_marginal_likelihood_value_`` is NaN)."""

    def log_marginal_likelihood(
        self, theta: Any = None, eval_gradient: bool = False, clone_kernel: bool = True
    ) -> Any:
        if self.optimizer is None and not eval_gradient:
            return float("nan")
        return super().log_marginal_likelihood(theta, eval_gradient, clone_kernel)


def condition(X: Array, y: Array, params: Mapping[str, float], *, n_categorical: int) -> Any:
    """The GP with the kernel parameters ``params`` kept, conditioned on ``(X, y)``."""
    model = _Conditioned(
        gp_kernel(params, n_categorical=n_categorical),
        alpha=1e-8,
        optimizer=None,
        copy_X_train=False,
    )
    return model.fit(X, y)


def predict(model: Any, X: Array) -> tuple[Array, Array]:
    """The posterior mean and standard deviation of the improvement function at ``X``
    (the noise of an observation left out: UCB is on the function)."""
    mean, std = model.predict(X, return_std=True)
    var = np.asarray(std, dtype=np.float64) ** 2 - float(model.kernel_.k2.noise_level)
    return np.asarray(mean, dtype=np.float64), np.sqrt(np.maximum(var, 0.0))


@functools.cache
def _controller() -> Any:
    """The process's BLAS libraries, found once (finding them takes milliseconds)."""
    return ThreadpoolController()


@contextlib.contextmanager
def blas_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` BLAS threads (``None``: as they are)."""
    if threads is None:
        yield
        return
    with _controller().limit(limits=threads, user_api="blas"):
        yield


def maximise_ucb(
    model: Any, fixed: Array, d: int, width: float, seeds: Array, rng: np.random.Generator
) -> Array:
    """The point of the unit cube ``[0, 1]**d`` of highest UCB (``mean + width * std``),
    with the time and the categories at ``fixed``: the best of random candidates and
    ``seeds``, refined by L-BFGS-B from the best few (a forward-difference gradient, all
    of its points in one prediction)."""

    def assemble(points: Array) -> Array:
        head = np.broadcast_to(fixed[:1], (points.shape[0], 1))
        tail = np.broadcast_to(fixed[1:], (points.shape[0], fixed.size - 1))
        return np.hstack([head, points, tail])

    def ucb(points: Array) -> Array:
        mean, std = predict(model, assemble(points))
        return mean + width * std

    candidates = np.vstack([rng.random((CANDIDATES, d)), np.clip(seeds, 0.0, 1.0)])
    values = ucb(candidates)
    step = 1e-6

    def negative(x: Array) -> tuple[float, Array]:
        around = np.vstack([x, x + step * np.eye(d)])
        v = ucb(around)
        return -float(v[0]), -(v[1:] - v[0]) / step

    best_x, best_v = candidates[int(np.argmax(values))], float(values.max())
    for i in np.argsort(-values, kind="stable")[:STARTS]:
        result = minimize(
            negative,
            candidates[i],
            method="L-BFGS-B",
            jac=True,
            bounds=[(0.0, 1.0)] * d,
            options={"maxiter": STEPS},
        )
        if -float(result.fun) > best_v:
            best_x, best_v = np.clip(result.x, 0.0, 1.0), -float(result.fun)
    return np.asarray(best_x, dtype=np.float64)
