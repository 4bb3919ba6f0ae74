"""Regressors of one metric against mixture weights, and honest (out-of-fold) validation.

Every regressor has the same small interface: ``fit(X, y)``, ``predict(X)``, ``predict_std(X)``
(``None`` when the model has no predictive uncertainty), ``state()`` / ``from_state()`` for saving
as JSON (no pickle: a fit directory can be shared and loaded without executing anything).
``X`` holds mixture weights, one row per run, columns in the order of the domains the caller keeps.

* ``loglinear`` - the field's default law (RegMix / olmix / "data mixing laws"):
  ``y = c + s * exp(log_k + x . t)`` fitted with a Huber loss (``scipy.optimize.least_squares``).
  The sign ``s`` is chosen by fit, so accuracies (which rise with good data) fit as well as losses.
  On the simplex ``exp(t_j)`` is the excess at domain j's vertex; it is bounded to at most
  ``exp(MAX_EXPONENT)`` (~33) standard deviations of the metric, so every prediction on the simplex
  stays within that many standard deviations of ``c`` (see ``LogLinearLaw``).
* ``mixing_law`` - a separable law with one exponent per domain:
  ``y = c + s * sum_j b_j (x_j + eps) ** (-a_j)``, b, a >= 0 (power law in each domain's share).
* ``linear`` - ordinary least squares (sklearn).
* ``gbt`` - gradient-boosted trees (sklearn ``HistGradientBoostingRegressor``, LightGBM's algorithm).
* ``gp`` - Gaussian process with ARD RBF + white noise (sklearn), with predictive std.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy import optimize, stats
from sklearn.exceptions import ConvergenceWarning

from mixlab.errors import ConfigError

# ---------------------------------------------------------------- shared helpers


def _standardize(y: np.ndarray) -> tuple[np.ndarray, float, float]:
    m = float(np.mean(y))
    sd = float(np.std(y))
    sd = sd if sd > 1e-12 else 1.0
    return (y - m) / sd, m, sd


def _is_simplex(X: np.ndarray) -> bool:
    return bool(np.allclose(X.sum(axis=1), 1.0, atol=1e-6))


def _robust_delta(residuals: np.ndarray) -> float:
    """Huber threshold 1.345 sigma with sigma from the MAD: the textbook 95%-efficiency choice."""
    mad = float(np.median(np.abs(residuals - np.median(residuals)))) * 1.4826
    return max(1.345 * mad, 1e-6)


def _huber_cost(residuals: np.ndarray, delta: float) -> float:
    a = np.abs(residuals)
    return float(np.sum(np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))))


def _huber_refits(resid, jac, start, delta: float | None, bounds=(-np.inf, np.inf), passes: int = 3,
                  max_nfev: int = 300):
    """Huber refits from a least-squares start; unless ``delta`` is given, each pass re-estimates it
    from the MAD of the current residuals (outliers inflate the first least-squares residuals, so
    one pass leaves them too much pull: on a test with 2 of 60 corrupted runs, 3 passes cut the
    error of the intercept from 0.015 to below 0.001)."""
    r = start
    for _ in range(1 if delta else passes):
        d = delta or _robust_delta(r.fun)
        r = optimize.least_squares(resid, r.x, jac=jac, bounds=bounds, loss="huber", f_scale=d, method="trf",
                                   max_nfev=max_nfev)
    return r, d


def _norm_weights(w: np.ndarray | None, n: int) -> np.ndarray | None:
    """Sample weights rescaled to mean 1 (None stays None): least-squares laws only need their ratios,
    and mean 1 keeps the Huber threshold in the units of an average run."""
    if w is None:
        return None
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError(f"sample_weight must be {n} finite positive numbers")
    return w / w.mean()


def _weighted(resid, jac, sw: np.ndarray | None):
    """Residuals and Jacobian scaled by ``sqrt(weight)``: weighted least squares through the same solver."""
    if sw is None:
        return resid, jac
    return (lambda p: sw * resid(p)), (lambda p: sw[:, None] * jac(p))


class Regressor:
    """Common interface; subclasses set ``name`` and implement ``fit``, ``predict``, ``state``.

    ``fit(X, y, sample_weight)`` takes optional per-run weights (inverse noise variances, see
    :mod:`mixlab.mixopt.noise`): runs measured more precisely pull the fit harder."""

    name: ClassVar[str]
    has_std: ClassVar[bool] = False

    def __init__(self, seed: int = 0, **options: Any) -> None:
        self.seed = seed
        self.options = options

    def fit(self, X: np.ndarray, y: np.ndarray,
            sample_weight: np.ndarray | None = None) -> Regressor:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_std(self, X: np.ndarray) -> np.ndarray | None:
        """Predictive standard deviation, or None for models that do not have one."""
        return None

    def state(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Regressor:  # pragma: no cover - interface
        raise NotImplementedError


# ---------------------------------------------------------------- log-linear law

# Bounds on the law's exponents, in units where the metric has mean 0 and std 1 over the fitted
# runs. On the simplex, exp(t_j) is the excess ``s*(y - c)`` at domain j's vertex, so the law can
# predict at most exp(3.5) ~ 33 standard deviations away from ``c`` anywhere on the simplex.
# Unbounded, 16-run toyworld swarms were fitted by spikes (exponents of -2000..+400 chasing one run)
# and held-out runs were predicted 5.6e3 and 1.9e9 away (out-of-fold RMSE). Fits of the synthetic
# benchmark's exp law reach vertex exponents of ~3.6, its power laws stay below ~4.5 with minima near
# -25; with 3.5 its held-out Spearman and regret match the unbounded fit's within seed noise (6 seeds,
# benchmarks/mixopt_synthetic.py --quick), while 4 and 5 let sparse 16-run swarms err by 11 and 32 sd.
# -50 is where exp is already ~0 (the residuals clip there): the lower bound only keeps starts finite.
MAX_EXPONENT = 3.5
MIN_EXPONENT = -50.0
SIMPLEX_TOLERANCE = 1e-3  # rows summing to 1 within this are mixtures (io.SUM_TOLERANCE): no intercept


class LogLinearLaw(Regressor):
    """``y = c + s * exp(log_k + x . t)``; on the simplex ``log_k`` folds into ``t`` (see ``exponents``).

    Fitted on standardized ``y`` (the law is closed under positive affine maps of ``y``), from
    starts given by linearizing ``log(s*y - c) = x . t`` for a few ``c`` below the data, then
    refined with a Huber loss whose threshold comes from the residual MAD of a least-squares pass.
    The exponents are bounded (options ``max_exponent`` / ``min_exponent``, defaults
    ``MAX_EXPONENT`` / ``MIN_EXPONENT``, in standardized units): with few runs or sparse mixtures an
    unbounded fit can chase single runs with exponents in the hundreds and extrapolate without limit.
    Off the simplex (rows not summing to 1, e.g. knobs with scalars) the bounds apply to ``log_k``
    and to each feature's largest contribution ``t_j * max|x_j|``.
    """

    name = "loglinear"

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> LogLinearLaw:
        X = np.asarray(X, dtype=np.float64)
        w = _norm_weights(sample_weight, len(X))
        self._sw = None if w is None else np.sqrt(w)
        yz, m, sd = _standardize(np.asarray(y, dtype=np.float64))
        sums = X.sum(axis=1)
        intercept = not bool(np.allclose(sums, 1.0, atol=SIMPLEX_TOLERANCE))
        if intercept:
            A = np.hstack([X, np.ones((len(X), 1))])
            scale = np.concatenate([np.maximum(np.abs(X).max(axis=0), 1e-12), [1.0]])
        else:  # mixtures: rows summing to 1 within the tables' tolerance are fitted as exact mixtures
            A, scale = X / sums[:, None], np.ones(X.shape[1])
        hi = np.concatenate([[np.inf], float(self.options.get("max_exponent", MAX_EXPONENT)) / scale])
        lo = np.concatenate([[-np.inf], float(self.options.get("min_exponent", MIN_EXPONENT)) / scale])
        bounds = (lo, hi)
        # one Huber pass per sign, keep the better sign, then finish its Huber passes
        fits = {s: self._start(A, s * yz, bounds) for s in (1.0, -1.0)}
        delta = min(f[1] for f in fits.values())
        s = min(fits, key=lambda k: _huber_cost(fits[k][0].fun, delta))
        r, resid, jac = fits[s][0], fits[s][2], fits[s][3]
        if not self.options.get("huber_delta"):
            r, _ = _huber_refits(resid, jac, r, None, bounds=bounds, passes=2)
        c, t = float(r.x[0]), r.x[1:].copy()
        log_k = 0.0
        if intercept:
            t, log_k = t[:-1], float(t[-1])
        # back to natural units: y = m + sd*s*(c + exp(log_k + x.t))
        self.c = m + sd * s * c
        self.sign = s
        self.log_k = log_k + math.log(sd)
        self.t = t
        return self

    def _start(self, A: np.ndarray, u: np.ndarray, bounds):
        """Least-squares fits from linearized starts (best two of four), then one Huber pass."""
        def resid(p: np.ndarray) -> np.ndarray:
            return p[0] + np.exp(np.clip(A @ p[1:], -50, 50)) - u

        def jac(p: np.ndarray) -> np.ndarray:
            e = np.exp(np.clip(A @ p[1:], -50, 50))
            return np.hstack([np.ones((len(u), 1)), e[:, None] * A])

        sw = self._sw
        resid, jac = _weighted(resid, jac, sw)
        rows = np.ones(len(u)) if sw is None else sw

        lo, hi = bounds[0][1:], bounds[1][1:]
        lo, hi = lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo)  # starts strictly inside the bounds
        spread = float(u.max() - u.min()) or 1.0
        starts = []
        for q in (0.02, 0.1, 0.5, 2.0):
            c0 = float(u.min()) - q * spread
            t0, *_ = np.linalg.lstsq(rows[:, None] * A, rows * np.log(u - c0), rcond=None)
            p0 = np.concatenate([[c0], np.clip(t0, lo, hi)])
            starts.append((float(np.sum(resid(p0) ** 2)), p0))
        starts.sort(key=lambda z: z[0])
        best = min((optimize.least_squares(resid, p0, jac=jac, bounds=bounds, method="trf", max_nfev=100)
                    for _, p0 in starts[:2]), key=lambda r: r.cost)
        r, delta = _huber_refits(resid, jac, best, self.options.get("huber_delta"), bounds=bounds, passes=1)
        return r, delta, resid, jac

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return self.c + self.sign * np.exp(np.clip(self.log_k + X @ self.t, -700, 700))

    def exponents(self) -> np.ndarray:
        """``t + log_k``: the exponents of ``y = c + s * exp(x . t')`` when rows sum to 1."""
        return self.t + self.log_k

    def state(self) -> dict[str, Any]:
        return {"c": self.c, "sign": self.sign, "log_k": self.log_k, "t": self.t.tolist(), "options": self.options}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LogLinearLaw:
        r = cls(**state.get("options", {}))
        r.c, r.sign, r.log_k, r.t = state["c"], state["sign"], state["log_k"], np.asarray(state["t"])
        return r


# ---------------------------------------------------------------- separable power law


class MixingLaw(Regressor):
    """``y = c + s * sum_j b_j (x_j + eps) ** (-a_j)`` with ``b_j >= 0`` and ``0 <= a_j <= 4``.

    Each domain has its own exponent: returns from a domain diminish as a power of its share.
    Starts: for a few common exponents, ``b`` by non-negative least squares (``scipy.optimize.nnls``),
    then all parameters refined with a Huber loss under bounds.
    """

    name = "mixing_law"

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> MixingLaw:
        X = np.asarray(X, dtype=np.float64)
        w = _norm_weights(sample_weight, len(X))
        self._sw = None if w is None else np.sqrt(w)
        self.eps = float(self.options.get("eps", 0.01))
        yz, m, sd = _standardize(np.asarray(y, dtype=np.float64))
        fits = [self._fit_sign(X, s * yz) + (s,) for s in (1.0, -1.0)]
        delta = min(f[3] for f in fits)
        c, b, a, _, res, s = min(fits, key=lambda f: _huber_cost(f[4], delta))
        self.c, self.sign, self.b, self.a = m + sd * s * c, s, sd * b, a
        return self

    def _fit_sign(self, X: np.ndarray, u: np.ndarray):
        d = X.shape[1]
        L = np.log(X + self.eps)

        def unpack(p):
            return p[0], p[1:d + 1], p[d + 1:]

        def resid(p):
            c, b, a = unpack(p)
            return c + np.exp(-L * a) @ b - u

        def jac(p):
            c, b, a = unpack(p)
            phi = np.exp(-L * a)
            return np.hstack([np.ones((len(u), 1)), phi, -(phi * L) * b])

        sw = self._sw
        resid, jac = _weighted(resid, jac, sw)
        rows = np.ones(len(u)) if sw is None else sw
        lo = np.concatenate([[-np.inf], np.zeros(d), np.zeros(d)])
        hi = np.concatenate([[np.inf], np.full(d, np.inf), np.full(d, 4.0)])
        starts = []
        for a0 in (0.1, 0.3, 0.7, 1.5):
            phi = np.exp(-L * a0)
            # c free, b >= 0: nnls on [phi, 1, -1]; keep the two starts that fit best
            coef, rnorm = optimize.nnls(rows[:, None] * np.hstack([phi, np.ones((len(u), 1)), -np.ones((len(u), 1))]),
                                        rows * u)
            starts.append((rnorm, np.concatenate([[coef[d] - coef[d + 1]], coef[:d] + 1e-6, np.full(d, a0)])))
        starts.sort(key=lambda z: z[0])
        best = min((optimize.least_squares(resid, p0, jac=jac, bounds=(lo, hi), method="trf", max_nfev=200)
                    for _, p0 in starts[:2]), key=lambda r: r.cost)
        r, delta = _huber_refits(resid, jac, best, self.options.get("huber_delta"), bounds=(lo, hi))
        c, b, a = unpack(r.x)
        return float(c), b.copy(), a.copy(), float(delta), r.fun

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return self.c + self.sign * (np.exp(-np.log(X + self.eps) * self.a) @ self.b)

    def state(self) -> dict[str, Any]:
        return {"c": self.c, "sign": self.sign, "b": self.b.tolist(), "a": self.a.tolist(), "eps": self.eps,
                "options": self.options}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MixingLaw:
        r = cls(**state.get("options", {}))
        r.c, r.sign, r.eps = state["c"], state["sign"], state["eps"]
        r.b, r.a = np.asarray(state["b"]), np.asarray(state["a"])
        return r


# ---------------------------------------------------------------- linear


class Linear(Regressor):
    """Ordinary least squares; no intercept on the simplex (it is collinear with the weights there)."""

    name = "linear"

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> Linear:
        from sklearn.linear_model import LinearRegression

        X = np.asarray(X, dtype=np.float64)
        model = LinearRegression(fit_intercept=not _is_simplex(X)).fit(X, y, sample_weight=_norm_weights(sample_weight, len(X)))
        self.coef, self.intercept = model.coef_.astype(np.float64), float(model.intercept_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef + self.intercept

    def state(self) -> dict[str, Any]:
        return {"coef": self.coef.tolist(), "intercept": self.intercept, "options": self.options}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Linear:
        r = cls(**state.get("options", {}))
        r.coef, r.intercept = np.asarray(state["coef"]), state["intercept"]
        return r


# ---------------------------------------------------------------- sklearn models kept as data


def _one_thread():
    """Swarm-sized problems are too small for OpenMP/BLAS threads: with threads, one 80-run
    HistGradientBoosting fit took 6.1 s on a busy 2-core machine against 0.35 s on one thread."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def _saved_weights(state: dict[str, Any]) -> np.ndarray | None:
    w = state.get("sample_weight")
    return None if w is None else np.asarray(w, dtype=np.float64)


class _RefitFromData(Regressor):
    """Models saved as (training data, weights, fitted hyperparameters) and rebuilt deterministically on load."""

    w: np.ndarray | None = None

    def state(self) -> dict[str, Any]:
        return {"X": self.X.tolist(), "y": self.y.tolist(), "seed": self.seed, "options": self.options,
                "sample_weight": None if self.w is None else self.w.tolist(), **self._extra_state()}

    def _extra_state(self) -> dict[str, Any]:
        return {}


class GradientBoosting(_RefitFromData):
    """sklearn ``HistGradientBoostingRegressor`` sized for swarms of tens to hundreds of runs."""

    name = "gbt"

    def _model(self, n: int):
        from sklearn.ensemble import HistGradientBoostingRegressor

        o = self.options
        return HistGradientBoostingRegressor(
            max_iter=int(o.get("max_iter", 300)), learning_rate=float(o.get("learning_rate", 0.05)),
            max_leaf_nodes=int(o.get("max_leaf_nodes", 15)),
            min_samples_leaf=int(o.get("min_samples_leaf", max(2, min(20, n // 10)))),
            l2_regularization=float(o.get("l2_regularization", 0.0)), early_stopping=False, random_state=self.seed)

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> GradientBoosting:
        self.X, self.y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.w = _norm_weights(sample_weight, len(self.X))
        with _one_thread():
            self.model = self._model(len(self.X)).fit(self.X, self.y, sample_weight=self.w)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        with _one_thread():
            return self.model.predict(np.asarray(X, dtype=np.float64))

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GradientBoosting:
        return cls(seed=state["seed"], **state["options"]).fit(np.asarray(state["X"]), np.asarray(state["y"]),
                                                               _saved_weights(state))


class GaussianProcess(_RefitFromData):
    """sklearn GP: constant x ARD-RBF + white noise, normalized targets; gives a predictive std."""

    name = "gp"
    has_std = True

    def _kernel(self, d: int):
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        return (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.full(d, 0.3), (1e-2, 1e2))
                + WhiteKernel(1e-2, (1e-6, 1.0)))

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None,
            theta: np.ndarray | None = None) -> GaussianProcess:
        """With ``sample_weight`` (inverse noise variances in the metric's units, as
        :mod:`mixlab.mixopt.noise` gives them) each run's own noise variance is added to the
        kernel's diagonal (sklearn's per-sample ``alpha``); the white-noise term then fits only
        what the weights leave unexplained."""
        from sklearn.gaussian_process import GaussianProcessRegressor

        self.X, self.y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        _norm_weights(self.w, len(self.X))  # validates
        var_y = float(np.var(self.y)) or 1.0
        alpha = 1e-10 if self.w is None else 1.0 / (self.w * var_y)  # normalize_y: alpha in units of var(y)
        kernel = self._kernel(self.X.shape[1])
        if theta is not None:  # rebuild from saved hyperparameters: no optimizer, same numbers
            kernel = kernel.clone_with_theta(np.asarray(theta))
        model = GaussianProcessRegressor(
            kernel, alpha=alpha, normalize_y=True, optimizer=None if theta is not None else "fmin_l_bfgs_b",
            n_restarts_optimizer=int(self.options.get("restarts", 1)), random_state=self.seed)
        with _one_thread(), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # hyperparameters at a bound are fine here
            self.model = model.fit(self.X, self.y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        with _one_thread():
            return self.model.predict(np.asarray(X, dtype=np.float64))

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        with _one_thread():
            return self.model.predict(np.asarray(X, dtype=np.float64), return_std=True)[1]

    def _extra_state(self) -> dict[str, Any]:
        return {"theta": self.model.kernel_.theta.tolist(), "kernel": str(self.model.kernel_)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GaussianProcess:
        r = cls(seed=state["seed"], **state["options"])
        return r.fit(np.asarray(state["X"]), np.asarray(state["y"]), _saved_weights(state),
                     theta=np.asarray(state["theta"]))


REGRESSORS: dict[str, type[Regressor]] = {c.name: c for c in (LogLinearLaw, MixingLaw, Linear, GradientBoosting,
                                                               GaussianProcess)}


def make_regressor(name: str, seed: int = 0, **options: Any) -> Regressor:
    """A new, unfitted regressor by name; unknown names are a ConfigError listing the choices."""
    if name not in REGRESSORS:
        raise ConfigError(f"unknown regressor {name!r}; choose one of {sorted(REGRESSORS)}")
    return REGRESSORS[name](seed=seed, **options)


def regressor_from_state(name: str, state: dict[str, Any]) -> Regressor:
    if name not in REGRESSORS:
        raise ConfigError(f"saved model uses unknown regressor {name!r}; choose one of {sorted(REGRESSORS)}")
    return REGRESSORS[name].from_state(state)


# ---------------------------------------------------------------- several metrics at once


class MixtureModel:
    """One regressor per metric over named domains; the unit that is saved, loaded and optimized."""

    def __init__(self, regressor: str, domains: Sequence[str], metrics: Sequence[str],
                 models: dict[str, Regressor]) -> None:
        self.regressor, self.domains, self.metrics, self.models = regressor, list(domains), list(metrics), models

    @classmethod
    def fit(cls, regressor: str, domains: Sequence[str], metrics: Sequence[str], X: np.ndarray, Y: np.ndarray,
            seed: int = 0, options: dict[str, Any] | None = None,
            step: Callable[[str], None] | None = None, sample_weight: np.ndarray | None = None) -> MixtureModel:
        """One regressor per metric; ``sample_weight`` (n_runs, n_metrics), when given, weights each
        metric's runs by the inverse of their noise variance."""
        models = {}
        for j, m in enumerate(metrics):
            w = None if sample_weight is None else sample_weight[:, j]
            models[m] = make_regressor(regressor, seed, **(options or {})).fit(X, Y[:, j], w)
            if step:
                step(m)
        return cls(regressor, domains, metrics, models)

    @property
    def has_std(self) -> bool:
        return REGRESSORS[self.regressor].has_std

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n, n_metrics) predictions; columns of X follow ``self.domains``."""
        return np.column_stack([self.models[m].predict(X) for m in self.metrics])

    def predict_std(self, X: np.ndarray) -> np.ndarray | None:
        if not self.has_std:
            return None
        return np.column_stack([self.models[m].predict_std(X) for m in self.metrics])

    def state(self) -> dict[str, Any]:
        return {"regressor": self.regressor, "domains": self.domains, "metrics": self.metrics,
                "models": {m: r.state() for m, r in self.models.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MixtureModel:
        models = {m: regressor_from_state(state["regressor"], s) for m, s in state["models"].items()}
        return cls(state["regressor"], state["domains"], state["metrics"], models)


# ---------------------------------------------------------------- out-of-fold validation


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each row: a seeded shuffle cut into ``folds`` near-equal parts (sklearn KFold)."""
    from sklearn.model_selection import KFold

    ids = np.empty(n, dtype=int)
    for k, (_, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(np.arange(n))):
        ids[test] = k
    return ids


def group_fold_ids(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Folds of whole groups (repeats of one mixture): a model is never validated on a mixture whose
    repeat it was trained on. Groups are folded in order of first appearance, so with one run per
    group this is exactly :func:`fold_ids`."""
    groups = np.asarray(groups)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")          # group ids by first appearance
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    return fold_ids(len(order), folds, seed)[rank[inverse]]


def out_of_fold(regressor: str, X: np.ndarray, Y: np.ndarray, folds: int = 5, seed: int = 0,
                options: dict[str, Any] | None = None,
                step: Callable[[str], None] | None = None, sample_weight: np.ndarray | None = None,
                groups: np.ndarray | None = None) -> np.ndarray:
    """Predictions for every run from a model that never saw it (nor a repeat of its mixture, when
    ``groups`` names the repeats): (n, n_metrics)."""
    n = len(X)
    n_groups = n if groups is None else len(np.unique(groups))
    if folds < 2 or folds > n_groups:
        what = "runs" if groups is None else "distinct mixtures"
        raise ConfigError(f"cv folds must be between 2 and the number of {what} ({n_groups}); got {folds}")
    ids = fold_ids(n, folds, seed) if groups is None else group_fold_ids(groups, folds, seed)
    oof = np.empty_like(Y, dtype=np.float64)
    for k in range(folds):
        tr, te = ids != k, ids == k
        for j in range(Y.shape[1]):
            w = None if sample_weight is None else sample_weight[tr, j]
            oof[te, j] = make_regressor(regressor, seed, **(options or {})).fit(X[tr], Y[tr, j], w).predict(X[te])
        if step:
            step(f"fold {k + 1}/{folds}")
    return oof


def _corr(fn, a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(fn(a, b)[0])


def top_decile(actual: np.ndarray, direction: str) -> np.ndarray:
    """Indices of the best 10% of runs by actual value (at least 3): where the choice is made."""
    k = max(3, math.ceil(0.1 * len(actual)))
    order = np.argsort(actual if direction == "min" else -actual, kind="stable")
    return order[:k]


def scores(actual: np.ndarray, predicted: np.ndarray, direction: str = "min") -> dict[str, float | None]:
    """Spearman, Pearson, RMSE (raw and over the metric's std), and Spearman within the top decile."""
    top = top_decile(actual, direction)
    rmse = float(np.sqrt(np.mean((predicted - actual) ** 2)))
    sd = float(np.std(actual))
    return {
        "spearman": _corr(stats.spearmanr, actual, predicted),
        "pearson": _corr(stats.pearsonr, actual, predicted),
        "rmse": rmse,
        "nrmse": rmse / sd if sd > 0 else None,
        "top_decile_spearman": _corr(stats.spearmanr, actual[top], predicted[top]),
        "top_decile_n": int(len(top)),
        "n": int(len(actual)),
    }


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def cv_report(metrics: Sequence[str], Y: np.ndarray, oof: np.ndarray, directions: dict[str, str],
              objective_weights: dict[str, float] | None = None) -> dict[str, Any]:
    """Per-metric figures, their means, and figures on the normalized equal-weight objective."""
    per = {m: {**scores(Y[:, j], oof[:, j], directions[m]), "direction": directions[m]}
           for j, m in enumerate(metrics)}
    keys = ("spearman", "pearson", "nrmse", "top_decile_spearman")
    agg: dict[str, Any] = {f"mean_{k}": _mean([per[m][k] for m in metrics]) for k in keys}
    w = np.array([(objective_weights or {}).get(m, 1.0) for m in metrics])
    sign = np.array([1.0 if directions[m] == "min" else -1.0 for m in metrics])
    mu, sd = Y.mean(axis=0), np.where(Y.std(axis=0) > 0, Y.std(axis=0), 1.0)
    to_obj = lambda A: ((A - mu) / sd * sign) @ w / w.sum()  # noqa: E731 - lower is better
    agg["objective"] = scores(to_obj(Y), to_obj(oof), "min")
    return {"per_metric": per, "aggregate": agg}
