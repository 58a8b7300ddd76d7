"""Linear separability of two modalities [DE].

[DE] Levi & Gilboa, "The Double-Ellipsoid Geometry of CLIP", ICML 2025: a linear classifier
separates CLIP image from text embeddings, and for ViT-B/32 two coordinates already separate them
100%. Both measures here run on raw (un-normalised) embeddings.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lakd.analysis.inputs import ArrayLike, as_float64, require_rows, require_same_dim


def _classifier():
    # standardising is an affine map, so the decision boundary is still linear in raw space
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def single_coordinate_accuracy(x: np.ndarray, labels: np.ndarray, block: int = 64) -> np.ndarray:
    """Best training accuracy [d] of a threshold on each coordinate of x [N, d] for 0/1 labels
    (both orientations, thresholds only between distinct values): a 1-D linear classifier.
    Columns are processed ``block`` at a time so memory stays O(N * block)."""
    n = len(labels)
    n_positive = int(labels.sum())
    majority = max(n_positive, n - n_positive)
    best = np.empty(x.shape[1])
    for start in range(0, x.shape[1], block):
        columns = x[:, start : start + block]
        order = np.argsort(columns, axis=0, kind="stable")
        sorted_values = np.take_along_axis(columns, order, axis=0)
        positives_left = np.cumsum(labels[order] == 1, axis=0)
        # predict 0 for the first i+1 rows and 1 for the rest
        correct = np.arange(1, n + 1)[:, None] - 2 * positives_left + n_positive
        valid = np.ones_like(correct, dtype=bool)
        valid[:-1] = sorted_values[1:] != sorted_values[:-1]
        best[start : start + block] = np.where(valid, np.maximum(correct, n - correct), 0).max(axis=0)
    return np.maximum(best, majority) / n


def minimal_separating_coordinates(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    target_accuracy: float = 1.0,
    max_coordinates: int = 8,
    candidates: int = 32,
) -> dict:
    """Greedy forward selection of the fewest raw coordinates whose linear classifier reaches
    ``target_accuracy`` on the given rows (training accuracy: this measures separability).

    Step 1 takes the coordinate with the best threshold accuracy; each next step adds, from the
    ``candidates`` best single coordinates, the one that most raises the training accuracy of a
    weakly regularised logistic regression. ``min_coordinates`` is None when ``max_coordinates``
    do not reach the target.
    """
    single = single_coordinate_accuracy(x, labels)
    x = StandardScaler().fit_transform(x)  # once for all fits; affine, so separability is unchanged
    pool = [int(i) for i in np.argsort(-single, kind="stable")[: max(candidates, 1)]]
    chosen, path = [pool[0]], [float(single[pool[0]])]
    while path[-1] < target_accuracy and len(chosen) < min(max_coordinates, x.shape[1]):
        best_coordinate, best_accuracy = None, -1.0
        for coordinate in pool:
            if coordinate in chosen:
                continue
            columns = x[:, chosen + [coordinate]]
            # weak regularisation so a separable set reaches 100%; Newton steps suit few features
            # (near-)separable data may stop before convergence: the accuracy is what counts here
            model = LogisticRegression(C=1e4, solver="newton-cholesky", max_iter=200)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                accuracy = model.fit(columns, labels).score(columns, labels)
            if accuracy > best_accuracy:
                best_coordinate, best_accuracy = coordinate, accuracy
        if best_coordinate is None:
            break
        chosen.append(best_coordinate)
        path.append(float(best_accuracy))
    reached = path[-1] >= target_accuracy
    return {
        "target_accuracy": target_accuracy,
        "min_coordinates": len(chosen) if reached else None,
        "coordinates": chosen,
        "accuracy_path": path,
    }


def linear_separability(
    a: ArrayLike,
    b: ArrayLike,
    *,
    folds: int = 5,
    seed: int = 0,
    target_accuracy: float = 1.0,
    max_coordinates: int = 8,
    candidates: int = 32,
    names: tuple[str, str] = ("image", "text"),
) -> dict:
    """Cross-validated accuracy of a logistic-regression classifier of raw ``a`` [N, d] vs raw
    ``b`` [M, d] (scikit-learn, stratified ``folds``-fold, shuffled with ``seed``), plus the greedy
    minimal number of coordinates that separate them (see :func:`minimal_separating_coordinates`)."""
    a, b = as_float64(a, names[0]), as_float64(b, names[1])
    require_same_dim(a, b, names[0], names[1])
    for rows, name in ((a, names[0]), (b, names[1])):
        require_rows(len(rows), folds, name, f"{folds}-fold separability")
    x = np.vstack([a, b])
    labels = np.concatenate([np.zeros(len(a), dtype=np.int64), np.ones(len(b), dtype=np.int64)])
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_score(_classifier(), x, labels, cv=splits, error_score="raise")
    return {
        "cv_accuracy": float(scores.mean()),
        "cv_accuracy_std": float(scores.std()),
        "folds": folds,
        "rows": [len(a), len(b)],
        **minimal_separating_coordinates(
            x, labels, target_accuracy=target_accuracy, max_coordinates=max_coordinates, candidates=candidates
        ),
    }
