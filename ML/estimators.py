"""The estimator registry a forker edits: adding a classifier is one EstimatorSpec in ESTIMATORS."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils._param_validation import InvalidParameterError

from ML.errors import InvalidParams, UnknownEstimator

# The same data and params train the same model.
_SEED = 42
# Server and job workers are processes running side by side; threads inside one estimator
# would oversubscribe the CPU.
_THREADS = 1


@dataclass(frozen=True)
class EstimatorSpec:
    """How to build one classifier.

    `factory` is the scikit-learn class; clients' `params` are its constructor arguments, merged
    over `defaults` and checked by scikit-learn's own validation. `needs_scaling` puts a
    StandardScaler on numeric features. `wrap`, when set, receives the validated estimator and
    returns the one to train (used to add calibrated probabilities).
    """

    name: str
    factory: Callable[..., Any]
    needs_scaling: bool
    defaults: Mapping[str, Any]
    description: str
    wrap: Callable[[Any], Any] | None = None


def _with_calibrated_probabilities(estimator: Any) -> CalibratedClassifierCV:
    # scikit-learn 1.9 deprecates SVC(probability=True) for exactly this; it fits the SVC on all
    # rows and Platt-scales its scores with 5-fold cross-validation, as libsvm did.
    return CalibratedClassifierCV(
        estimator, method="sigmoid", cv=5, ensemble=False, n_jobs=_THREADS
    )


def _registry(*specs: EstimatorSpec) -> Mapping[str, EstimatorSpec]:
    registry = {spec.name: spec for spec in specs}
    if len(registry) != len(specs):
        raise ValueError("two estimators share a name")
    return MappingProxyType(registry)


def _defaults(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(values)


ESTIMATORS: Mapping[str, EstimatorSpec] = _registry(
    EstimatorSpec(
        name="random_forest",
        factory=RandomForestClassifier,
        needs_scaling=False,
        defaults=_defaults(n_estimators=100, random_state=_SEED, n_jobs=_THREADS),
        description="Random forest: robust default for tabular data, no scaling needed.",
    ),
    EstimatorSpec(
        name="extra_trees",
        factory=ExtraTreesClassifier,
        needs_scaling=False,
        defaults=_defaults(n_estimators=100, random_state=_SEED, n_jobs=_THREADS),
        description="Extremely randomised trees: like a random forest, faster to train.",
    ),
    EstimatorSpec(
        name="logistic_regression",
        factory=LogisticRegression,
        needs_scaling=True,
        defaults=_defaults(max_iter=1000, random_state=_SEED),
        description="Logistic regression: fast linear baseline with calibrated probabilities.",
    ),
    EstimatorSpec(
        name="svc",
        factory=SVC,
        needs_scaling=True,
        defaults=_defaults(random_state=_SEED),
        description="Support vector classifier (RBF kernel) with calibrated probabilities.",
        wrap=_with_calibrated_probabilities,
    ),
    EstimatorSpec(
        name="gradient_boosting",
        factory=GradientBoostingClassifier,
        needs_scaling=False,
        defaults=_defaults(random_state=_SEED),
        description="Gradient boosted trees (exact): accurate on small and medium data.",
    ),
    EstimatorSpec(
        name="hist_gradient_boosting",
        factory=HistGradientBoostingClassifier,
        needs_scaling=False,
        defaults=_defaults(random_state=_SEED),
        description="Histogram gradient boosting: fast boosted trees for large data.",
    ),
    EstimatorSpec(
        name="knn",
        factory=KNeighborsClassifier,
        needs_scaling=True,
        defaults=_defaults(n_neighbors=5, n_jobs=_THREADS),
        description="k nearest neighbours: predicts the majority label of similar rows.",
    ),
    EstimatorSpec(
        name="decision_tree",
        factory=DecisionTreeClassifier,
        needs_scaling=False,
        defaults=_defaults(random_state=_SEED),
        description="A single decision tree: easy to inspect, prone to overfit.",
    ),
    EstimatorSpec(
        name="gaussian_nb",
        factory=GaussianNB,
        needs_scaling=False,
        defaults=_defaults(),
        description="Gaussian naive Bayes: very fast baseline for numeric features.",
    ),
)

DEFAULT_ESTIMATOR = "random_forest"


def estimator_spec(name: str) -> EstimatorSpec:
    """The registry entry for `name`, or UnknownEstimator listing the choices."""
    spec = ESTIMATORS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise UnknownEstimator(
            f"unknown estimator {name!r}; choose one of: {', '.join(ESTIMATORS)}",
            details=[{"field": "estimator", "error": "unknown estimator"}],
        )
    return spec


def parameter_names(name: str) -> list[str]:
    """Hyperparameters a client may set for estimator `name`, sorted."""
    return sorted(_parameter_names(estimator_spec(name).factory))


def build_estimator(name: str, params: Mapping[str, Any]) -> Any:
    """A new, unfitted estimator with `params` merged over the registry defaults.

    Raises UnknownEstimator for a name not in ESTIMATORS, and InvalidParams for a parameter the
    class does not have or a value scikit-learn's own validation rejects.
    """
    spec = estimator_spec(name)
    if not isinstance(params, Mapping):
        raise InvalidParams(
            'params must be a JSON object of hyperparameters, e.g. {"n_estimators": 200}',
            details=[{"field": "params", "error": "must be an object"}],
        )
    valid = _parameter_names(spec.factory)
    unknown = sorted(str(key) for key in params if key not in valid)
    if unknown:
        raise InvalidParams(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} for {name}: "
            f"{', '.join(unknown)}; valid parameters are: {', '.join(sorted(valid))}",
            details=[{"field": key, "error": "unknown parameter"} for key in unknown],
        )
    try:
        estimator = spec.factory(**{**spec.defaults, **params})
        validate = getattr(estimator, "_validate_params", None)
        if callable(validate):
            validate()
    except (InvalidParameterError, TypeError, ValueError) as exc:
        raise InvalidParams(f"invalid parameters for {name}: {exc}") from None
    return spec.wrap(estimator) if spec.wrap is not None else estimator


@lru_cache(maxsize=64)
def _parameter_names(factory: Callable[..., Any]) -> frozenset[str]:
    # scikit-learn marks a deprecated parameter with the default "deprecated"; setting it only
    # earns a FutureWarning, so it is not offered.
    defaults = factory().get_params(deep=False)
    return frozenset(
        key
        for key, value in defaults.items()
        if not (isinstance(value, str) and value == "deprecated")
    )
