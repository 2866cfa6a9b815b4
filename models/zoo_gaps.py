"""Zoo models that handle missing values, with rows that have gaps (NaN), and onnxruntime's
outputs on them: HistGradientBoosting, XGBoost and LightGBM trained on data with gaps (their
trees carry missing-value tracks), and pipelines with a SimpleImputer in front.

Each model is also checked here against its own library (scikit-learn, XGBoost, LightGBM) on
the same rows, so a fixture is only written when onnxruntime agrees with the library.

Run by hand (not by CI), from this directory, with zoo.py's environment:

    .zoo/bin/python zoo_gaps.py

Writes `../tests/fixtures/zoo/*_gaps.{onnx,json}`; Plinth's zoo tests then compare Plinth with
onnxruntime on them, through the model's own run and through every door.
"""

import numpy as np
import pandas
import lightgbm
import xgboost
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Binarizer, OneHotEncoder, StandardScaler

from zoo import SEED, customers, diabetes, iris, save

OPSETS = {"": 17, "ai.onnx.ml": 3}


def with_gaps(x, share, seed, keep_first_column=False):
    """A copy of x with `share` of its cells missing (NaN); row 0 keeps every value, rows 1 to 3
    have at least one gap each (the rows the doors' tests send)."""
    rng = np.random.default_rng(seed)
    x = x.copy()
    gaps = rng.random(x.shape) < share
    gaps[0, :] = False
    for r in (1, 2, 3):
        if r < len(x):
            gaps[r, (r - 1) % x.shape[1]] = True
    if keep_first_column:
        gaps[:, 0] = False
    x[gaps] = np.nan
    return x


def close(a, b, what):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    worst = np.max(np.abs(a - b) / np.maximum(np.abs(b), 1.0))
    assert worst < 1e-5, f"{what}: onnxruntime and the library differ by {worst}"


def tree_model(name, description, estimator, data, proba):
    xtr, ytr, xte, _ = data
    xtr, xte = with_gaps(xtr, 0.15, SEED), with_gaps(xte, 0.25, SEED + 1)
    estimator.fit(xtr, ytr)
    model = convert_sklearn(estimator, initial_types=[("X", FloatTensorType([None, xtr.shape[1]]))],
                            target_opset=OPSETS)
    save(name, description, model, {"X": xte})
    import onnxruntime as ort
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"X": xte})
    if proba:
        got = outputs[1]
        got = np.array([[row[k] for k in sorted(row)] for row in got]) if isinstance(got, list) else got
        close(got, estimator.predict_proba(xte), name)
    else:
        close(outputs[0].ravel(), estimator.predict(xte), name)


def main():
    tree_model("hist_gradient_boosting_classifier_gaps",
               "HistGradientBoostingClassifier on iris with 15% of the cells missing",
               HistGradientBoostingClassifier(max_iter=40, random_state=SEED), iris(), True)
    tree_model("hist_gradient_boosting_regressor_gaps",
               "HistGradientBoostingRegressor on diabetes with 15% of the cells missing",
               HistGradientBoostingRegressor(max_iter=60, random_state=SEED), diabetes(), False)
    tree_model("xgboost_regressor_gaps", "XGBRegressor on diabetes with 15% of the cells missing",
               xgboost.XGBRegressor(n_estimators=60, max_depth=4, random_state=SEED), diabetes(), False)
    tree_model("lightgbm_classifier_gaps", "LGBMClassifier on iris with 15% of the cells missing",
               lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, random_state=SEED, verbose=-1),
               iris(), True)

    # An imputer in front of a linear model, one input of four columns.
    xtr, ytr, xte, _ = diabetes()
    xtr, xte = with_gaps(xtr, 0.15, SEED), with_gaps(xte, 0.25, SEED + 1)
    pipeline = Pipeline([("impute", SimpleImputer(strategy="mean")), ("scale", StandardScaler()),
                         ("ridge", Ridge(alpha=1.0))]).fit(xtr, ytr)
    model = convert_sklearn(pipeline, initial_types=[("X", FloatTensorType([None, xtr.shape[1]]))],
                            target_opset=OPSETS)
    save("imputer_ridge_gaps", "SimpleImputer (mean) + StandardScaler + Ridge on diabetes with gaps",
         model, {"X": xte})

    # zoo.py's mixed pipeline, its numeric columns sent with their gaps.
    numeric, city, plan, y = customers()
    n = len(y)
    test = np.arange(n) >= n - 16
    columns = {"age": numeric[:, :1], "income": numeric[:, 1:2], "visits": numeric[:, 2:3],
               "city": city, "plan": plan}
    table = pandas.DataFrame({k: v[:, 0] for k, v in columns.items()})
    pipeline = Pipeline([
        ("columns", ColumnTransformer([
            ("numbers", Pipeline([
                ("impute", SimpleImputer(strategy="median")),
                ("scale", StandardScaler()),
            ]), ["age", "income"]),
            ("visits", Binarizer(threshold=3.0), ["visits"]),
            ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ])),
        ("classify", LogisticRegression(max_iter=500)),
    ])
    pipeline.fit(table[~test], y[~test])
    model = convert_sklearn(
        pipeline,
        initial_types=[(k, StringTensorType([None, 1]) if v.dtype.kind in "UO" else FloatTensorType([None, 1]))
                       for k, v in columns.items()],
        target_opset=OPSETS,
    )
    inputs = {k: v[test].copy() for k, v in columns.items()}
    # Rows 1 and 2 miss their age, row 3 its income (row 0 is whole).
    inputs["age"][1:3, 0] = np.nan
    inputs["income"][3, 0] = np.nan
    save("mixed_pipeline_gaps",
         "zoo.py's mixed pipeline (SimpleImputer on age and income) with ages and incomes missing",
         model, inputs)


if __name__ == "__main__":
    main()
