"""Exports the model zoo: the common scikit-learn, XGBoost and LightGBM models as their exporters
write them by default (ZipMap included), with onnxruntime's outputs on fixed inputs.

Plinth's tests (`tests/api/zoo.rs`, `src/inference/ml/zoo_tests.rs`) load every model written
here and compare what Plinth computes with what onnxruntime computed: labels exactly, numbers
within 1e-5 relative.

Run by hand (not by CI), from this directory:

    python3 -m venv .zoo && .zoo/bin/pip install -r zoo-requirements.txt
    .zoo/bin/python zoo.py

onnxruntime's StringNormalizer (the text model) needs the en_US.UTF-8 locale: on Debian,
`apt-get install locales`, uncomment it in /etc/locale.gen, run `locale-gen`.

Writes `../tests/fixtures/zoo/<name>.onnx` and `../tests/fixtures/zoo/<name>.json`. Every data
set ships with scikit-learn or is generated here from a fixed seed, so nothing is downloaded.
"""

import json
import pathlib
import sys

import lightgbm
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
import pandas
import sklearn
import skl2onnx
import xgboost
from onnxmltools.convert.common.data_types import FloatTensorType as MlFloat
from skl2onnx import convert_sklearn, to_onnx, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from skl2onnx.common.shape_calculator import (
    calculate_linear_classifier_output_shapes,
    calculate_linear_regressor_output_shapes,
)
from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
from sklearn import datasets
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Binarizer, OneHotEncoder, StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "fixtures" / "zoo"
SEED = 20261126
ROWS = 16  # rows of fixed input per model

update_registered_converter(
    xgboost.XGBClassifier, "XGBoostXGBClassifier",
    calculate_linear_classifier_output_shapes, convert_xgboost,
    options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
)
update_registered_converter(
    xgboost.XGBRegressor, "XGBoostXGBRegressor",
    calculate_linear_regressor_output_shapes, convert_xgboost,
)
update_registered_converter(
    lightgbm.LGBMClassifier, "LightGbmLGBMClassifier",
    calculate_linear_classifier_output_shapes, convert_lightgbm,
    options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
)
update_registered_converter(
    lightgbm.LGBMRegressor, "LightGbmLGBMRegressor",
    calculate_linear_regressor_output_shapes, convert_lightgbm,
    options={"split": None},
)


def split(x, y, rows=ROWS):
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(x))
    test, train = order[:rows], order[rows:]
    return x[train], y[train], x[test], y[test]


def iris():
    d = datasets.load_iris()
    return split(d.data.astype(np.float32), d.target)


def digits():
    d = datasets.load_digits()
    return split(d.data.astype(np.float32), d.target)


def diabetes():
    d = datasets.load_diabetes()
    return split(d.data.astype(np.float32), d.target.astype(np.float32))


def breast_cancer():
    d = datasets.load_breast_cancer()
    return split(d.data.astype(np.float32), d.target)


def customers(n=600):
    """A mixed table: numeric columns with gaps, string columns, a yes/no target."""
    rng = np.random.default_rng(SEED)
    age = rng.normal(42, 12, n).clip(18, 90)
    income = rng.lognormal(10.5, 0.5, n)
    visits = rng.poisson(4, n).astype(float)
    city = rng.choice(["Lyon", "Oslo", "Porto", "Turin"], n, p=[0.4, 0.3, 0.2, 0.1])
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    score = (
        0.04 * (age - 42) + 0.8 * (np.log(income) - 10.5) + 0.3 * (visits - 4)
        + np.where(city == "Oslo", 0.7, 0.0) + np.where(plan == "pro", 1.2, 0.0)
        + rng.normal(0, 0.5, n)
    )
    y = np.where(score > 0.3, "renews", "leaves")
    age[rng.random(n) < 0.1] = np.nan
    income[rng.random(n) < 0.1] = np.nan
    numeric = np.stack([age, income, visits], axis=1).astype(np.float32)
    return numeric, city.reshape(-1, 1), plan.reshape(-1, 1), y


def jsonable(value):
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "US" or value.dtype == object:
            return {"dtype": "string", "shape": list(value.shape), "data": [str(v) for v in value.ravel()]}
        kind = {"f": "f32" if value.dtype == np.float32 else "f64", "i": "i64", "b": "bool"}[value.dtype.kind]
        data = value.ravel().tolist()
        if kind.startswith("f"):
            data = [None if np.isnan(v) else float(v) for v in data]
        return {"dtype": kind, "shape": list(value.shape), "data": data}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        # ZipMap: one label -> probability map per row
        labels = list(value[0].keys())
        return {
            "dtype": "zipmap",
            "labels": [str(l) for l in labels],
            "shape": [len(value), len(labels)],
            "data": [float(row[l]) for row in value for l in labels],
        }
    raise TypeError(type(value))


def save(name, description, model, inputs):
    OUT.mkdir(parents=True, exist_ok=True)
    onnx_model = model if isinstance(model, onnx.ModelProto) else model
    onnx_model.doc_string = description
    path = OUT / f"{name}.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, inputs)
    ops = sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in onnx_model.graph.node})
    fixture = {
        "model": f"{name}.onnx",
        "description": description,
        "operators": ops,
        "inputs": {k: jsonable(v) for k, v in inputs.items()},
        "outputs": {o.name: jsonable(v) for o, v in zip(session.get_outputs(), outputs)},
    }
    (OUT / f"{name}.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"{name:28} {path.stat().st_size:>9} bytes  {' '.join(ops)}")


def sk(name, description, estimator, data, **kw):
    xtr, ytr, xte, _ = data
    estimator.fit(xtr, ytr)
    model = to_onnx(estimator, xtr[:1], target_opset={"": 17, "ai.onnx.ml": 3}, **kw)
    save(name, description, model, {model.graph.input[0].name: xte})
    return estimator


def dict_vectorizer():
    """dict_vectorizer_classifier: scikit-learn's DictVectorizer (a map input, string keys to
    floats, categorical values one-hot as "city=paris") in front of a random forest. onnxruntime
    takes one map a run; the fixture keeps each row's map ("maps") and the same rows laid out
    by the vocabulary ("inputs", 0 for an absent key), which is what Plinth serves.
    `python -c "import zoo; zoo.dict_vectorizer()"` writes it alone."""
    from sklearn.feature_extraction import DictVectorizer
    from skl2onnx.common.data_types import DictionaryType

    rng = np.random.default_rng(SEED)
    cities = ["paris", "lyon", "lille"]

    def record(i):
        r = {"age": float(rng.integers(18, 80)), "visits": float(rng.poisson(3))}
        if rng.random() < 0.7:
            r["income"] = float(np.float32(rng.normal(50, 12)))
        r["city=" + cities[i % 3]] = 1.0
        return r

    records = [record(i) for i in range(300)]
    y = [int(r["age"] > 45) + int(r.get("income", 0) > 55) for r in records]
    pipe = Pipeline([("dict", DictVectorizer(sparse=False)),
                     ("forest", RandomForestClassifier(n_estimators=20, max_depth=5, random_state=SEED))])
    pipe.fit(records[:-ROWS], y[:-ROWS])
    model = convert_sklearn(pipe, initial_types=[("input", DictionaryType(StringTensorType([1]), FloatTensorType([1])))],
                            target_opset={"": 17, "ai.onnx.ml": 3})
    name = "dict_vectorizer_classifier"
    model.doc_string = "DictVectorizer (a map input) in front of a RandomForestClassifier, 20 trees"
    path = OUT / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    test = records[-ROWS:]
    labels, probabilities = [], []
    for r in test:
        label, proba = session.run(None, {"input": r})
        labels.extend(label.tolist())
        probabilities.extend(proba)
    vocabulary = list(pipe.named_steps["dict"].feature_names_)
    dense = np.array([[r.get(k, 0.0) for k in vocabulary] for r in test], dtype=np.float32)
    outputs = session.get_outputs()
    ops = sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node})
    fixture = {
        "model": f"{name}.onnx",
        "description": model.doc_string,
        "operators": ops,
        "columns": {"input": vocabulary},
        "maps": test,
        "inputs": {"input": jsonable(dense)},
        "outputs": {outputs[0].name: jsonable(np.array(labels, dtype=np.int64)),
                    outputs[1].name: jsonable(probabilities)},
    }
    (OUT / f"{name}.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"{name:28} {path.stat().st_size:>9} bytes  {' '.join(ops)}")


def reviews(n=400):
    """Short product reviews made from word lists (fixed seed): mixed case, punctuation, digits,
    accents, runs of spaces, the odd empty string, some words skl2onnx's tokenizer keeps and
    scikit-learn's drops (one letter)."""
    rng = np.random.default_rng(SEED)
    good = ["great", "love", "excellent", "perfect", "Works", "happy", "recommend", "fast"]
    bad = ["broken", "awful", "refund", "late", "Poor", "waste", "never", "slow"]
    filler = ["the", "a", "it", "is", "was", "this", "product", "délivery", "I", "very", "x2",
              "battery", "café", "and", "not", "too", "ÉTÉ", "item_42"]
    texts, labels = [], []
    for i in range(n):
        positive = rng.random() < 0.5
        words = list(rng.choice(filler, rng.integers(0, 7)))
        words += list(rng.choice(good if positive else bad, rng.integers(1, 4)))
        if rng.random() < 0.3:
            words += list(rng.choice(bad if positive else good, 1))
        rng.shuffle(words)
        text = " ".join(w.upper() if rng.random() < 0.1 else w for w in words)
        if rng.random() < 0.2:
            text += rng.choice(["!", "!!", ".", " :)", "?", "  ", ", really."])
        if i % 97 == 0:
            text = ""
        texts.append(text)
        labels.append(int(positive))
    return np.array(texts, dtype=object).reshape(-1, 1), np.array(labels)


def tfidf():
    """tfidf_logistic_regression: TfidfVectorizer (unigrams and bigrams) and LogisticRegression
    on one text column, what skl2onnx writes as StringNormalizer, Tokenizer (com.microsoft),
    TfIdfVectorizer, Normalizer and LinearClassifier; onnxruntime's answers on 400 strings.
    `python -c "import zoo; zoo.tfidf()"` writes it alone."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    x, y = reviews()
    pipe = Pipeline([("tfidf", TfidfVectorizer(ngram_range=(1, 2), min_df=2)),
                     ("clf", LogisticRegression(max_iter=500))])
    pipe.fit(x[:, 0], y)
    model = convert_sklearn(pipe, initial_types=[("text", StringTensorType([None, 1]))],
                            target_opset={"": 17, "ai.onnx.ml": 3})
    save("tfidf_logistic_regression",
         "TfidfVectorizer (1- and 2-grams) and LogisticRegression on short reviews", model, {"text": x})


def main():
    np.random.seed(SEED)
    print(f"scikit-learn {sklearn.__version__}, skl2onnx {skl2onnx.__version__}, "
          f"xgboost {xgboost.__version__}, lightgbm {lightgbm.__version__}, "
          f"onnxmltools {onnxmltools.__version__}, onnxruntime {ort.__version__}", file=sys.stderr)
    sk("linear_regression", "LinearRegression on diabetes", LinearRegression(), diabetes())
    sk("logistic_regression", "LogisticRegression on iris", LogisticRegression(max_iter=500), iris())
    sk("decision_tree_classifier", "DecisionTreeClassifier on iris",
       DecisionTreeClassifier(max_depth=5, random_state=SEED), iris())
    sk("decision_tree_regressor", "DecisionTreeRegressor on diabetes",
       DecisionTreeRegressor(max_depth=6, random_state=SEED), diabetes())
    sk("random_forest_classifier", "RandomForestClassifier, 100 trees, on digits",
       RandomForestClassifier(n_estimators=100, random_state=SEED), digits())
    sk("random_forest_regressor", "RandomForestRegressor, 50 trees, on diabetes",
       RandomForestRegressor(n_estimators=50, max_depth=8, random_state=SEED), diabetes())
    sk("random_forest_binary", "RandomForestClassifier, 30 trees, on breast cancer (two classes)",
       RandomForestClassifier(n_estimators=30, max_depth=6, random_state=SEED), breast_cancer())
    sk("gradient_boosting_classifier", "GradientBoostingClassifier on iris",
       GradientBoostingClassifier(n_estimators=50, random_state=SEED), iris())
    sk("gradient_boosting_binary", "GradientBoostingClassifier on breast cancer (two classes)",
       GradientBoostingClassifier(n_estimators=50, random_state=SEED), breast_cancer())
    sk("gradient_boosting_regressor", "GradientBoostingRegressor, 300 trees, on diabetes",
       GradientBoostingRegressor(n_estimators=300, max_depth=3, random_state=SEED), diabetes())
    sk("hist_gradient_boosting_classifier", "HistGradientBoostingClassifier on iris",
       HistGradientBoostingClassifier(max_iter=50, random_state=SEED), iris())
    sk("hist_gradient_boosting_regressor", "HistGradientBoostingRegressor on diabetes",
       HistGradientBoostingRegressor(max_iter=50, random_state=SEED), diabetes())
    sk("svc_linear", "SVC, linear kernel, on iris", SVC(kernel="linear"), iris())
    sk("svc_rbf", "SVC, RBF kernel, with probabilities, on iris",
       SVC(kernel="rbf", probability=True, random_state=SEED), iris())
    sk("svc_rbf_binary", "SVC, RBF kernel, on breast cancer (two classes)",
       Pipeline([("scale", StandardScaler()), ("svc", SVC(kernel="rbf"))]), breast_cancer())
    sk("svr_linear", "SVR, linear kernel, on diabetes", SVR(kernel="linear", C=50.0), diabetes())
    sk("svr_rbf", "SVR, RBF kernel, on diabetes", SVR(kernel="rbf", C=50.0), diabetes())
    sk("mlp_classifier", "MLPClassifier on digits",
       MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=SEED), digits())
    sk("knn_classifier", "KNeighborsClassifier, 5 neighbours, on iris", KNeighborsClassifier(), iris())

    # String labels.
    xtr, ytr, xte, yte = iris()
    names = np.array(["setosa", "versicolor", "virginica"])
    sk("string_labels_forest", "RandomForestClassifier on iris with the species names as labels",
       RandomForestClassifier(n_estimators=20, max_depth=4, random_state=SEED),
       (xtr, names[ytr], xte, names[yte]))
    sk("string_labels_logistic", "LogisticRegression on iris with the species names as labels",
       LogisticRegression(max_iter=500), (xtr, names[ytr], xte, names[yte]))

    # A pipeline on mixed numeric and string columns, one ONNX input per column.
    numeric, city, plan, y = customers()
    n = len(y)
    test = np.arange(n) >= n - ROWS
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
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    inputs = {k: v[test] for k, v in columns.items()}
    inputs["city"] = inputs["city"].copy()
    inputs["city"][0, 0] = "Berlin"  # a city never seen in training: OneHotEncoder ignores it
    inputs["age"] = np.nan_to_num(inputs["age"], nan=40.0)  # Plinth's doors refuse NaN
    inputs["income"] = np.nan_to_num(inputs["income"], nan=30000.0)
    save("mixed_pipeline",
         "SimpleImputer + StandardScaler, Binarizer and OneHotEncoder on numeric and string "
         "columns, then LogisticRegression (string labels)",
         model, inputs)

    # XGBoost and LightGBM.
    xtr, ytr, xte, _ = iris()
    for name, est, data in [
        ("xgboost_classifier", xgboost.XGBClassifier(n_estimators=30, max_depth=3, random_state=SEED), iris()),
        ("xgboost_regressor", xgboost.XGBRegressor(n_estimators=60, max_depth=4, random_state=SEED), diabetes()),
        ("lightgbm_classifier", lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, random_state=SEED, verbose=-1), iris()),
        ("lightgbm_regressor", lightgbm.LGBMRegressor(n_estimators=60, num_leaves=16, random_state=SEED, verbose=-1), diabetes()),
    ]:
        xtr, ytr, xte, _ = data
        est.fit(xtr, ytr)
        model = convert_sklearn(est, initial_types=[("X", FloatTensorType([None, xtr.shape[1]]))],
                                target_opset={"": 17, "ai.onnx.ml": 3})
        save(name, f"{type(est).__name__} on {'iris' if xtr.shape[1] == 4 else 'diabetes'}",
             model, {"X": xte})


if __name__ == "__main__":
    main()
    dict_vectorizer()
    tfidf()
