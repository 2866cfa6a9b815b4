"""Trains and exports the models shipped in this repository, with their cards, reference data
and the fixtures the tests compare Plinth's outputs against (computed with onnxruntime).

Run by hand (not by CI), from this directory:

    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
    .venv/bin/python train.py

Every data set ships with scikit-learn, so nothing is downloaded. Exports use
`zipmap=False` so classifiers output a plain probability tensor.
"""

import hashlib
import json
import pathlib

import numpy as np
import onnxruntime as ort
import sklearn
import skl2onnx
from skl2onnx import to_onnx
from sklearn import datasets
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score, mean_squared_error
from sklearn.model_selection import train_test_split

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures"
SEED = 20261126


def sha256_of(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float64).tobytes()).hexdigest()


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(round(float(v), 6))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def write_card(path, card, features, training):
    lines = []
    for key in ("title", "description", "task", "labels", "image", "example"):
        if key in card:
            value = card[key]
            if key == "description":
                lines.append(f'description = """\n{value.strip()}\n"""')
            elif key == "image":
                lines.append("")
                lines.append("[image]")
                for k, v in value.items():
                    lines.append(f"{k} = {toml_value(v)}")
            else:
                lines.append(f"{key} = {toml_value(value)}")
    for f in features:
        lines.append("")
        lines.append("[[features]]")
        for k, v in f.items():
            lines.append(f"{k} = {toml_value(v)}")
    lines.append("")
    lines.append("[training]")
    for k in ("dataset", "data_sha256", "rows", "algorithm", "library"):
        lines.append(f"{k} = {toml_value(training[k])}")
    lines.append("metrics = { " + ", ".join(f"{k} = {toml_value(v)}" for k, v in training["metrics"].items()) + " }")
    path.write_text("\n".join(lines) + "\n")


def write_reference(path, names, X):
    rows = [",".join(names)]
    for row in X:
        rows.append(",".join(f"{float(v):g}" for v in row))
    path.write_text("\n".join(rows) + "\n")


def export(model, X, name):
    onx = to_onnx(
        model,
        X[:1].astype(np.float32),
        options={id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None,
        target_opset={"": 15, "ai.onnx.ml": 3},
    )
    onx.doc_string = f"{name}: exported by skl2onnx {skl2onnx.__version__} from scikit-learn {sklearn.__version__}"
    return onx


def features_from(names, X, labels=None, units=None, step=0.1, decimals=2):
    out = []
    for i, n in enumerate(names):
        col = X[:, i]
        f = {
            "name": n,
            "label": (labels or {}).get(n, n.replace("_", " ").capitalize()),
            "type": "number",
            "min": round(float(col.min()), decimals),
            "max": round(float(col.max()), decimals),
            "step": step,
        }
        if units and n in units:
            f["unit"] = units[n]
        out.append(f)
    return out


def save(name, onx, card, features, training, names, X_ref, fixture_rows):
    d = HERE / name / "1"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(onx.SerializeToString())
    write_card(d / "card.toml", card, features, training)
    write_reference(d / "reference.csv", names, X_ref)
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    outputs = sess.run(None, {input_name: fixture_rows.astype(np.float32)})
    fixture = {
        "model": name,
        "onnxruntime": ort.__version__,
        "features": names,
        "rows": [list(map(float, r)) for r in fixture_rows],
        "inputs": [dict(zip(names, map(float, r))) for r in fixture_rows],
        "outputs": {o.name: v.tolist() for o, v in zip(sess.get_outputs(), outputs)},
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / f"{name}.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print(name, {k: (np.asarray(v).shape) for k, v in fixture["outputs"].items()}, training["metrics"])


def iris():
    data = datasets.load_iris()
    X, y = data.data, data.target
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=SEED, stratify=y)
    model = LogisticRegression(max_iter=1000).fit(Xtr, ytr)
    card = {
        "title": "Iris species",
        "description": """
Tells the three species of iris in Fisher's 1936 data apart from four measurements of the flower:
the length and width of its **sepals** (the green leaves under the petals) and of its **petals**.

*Setosa* is easy to recognise by its small petals; *versicolor* and *virginica* overlap, so expect
less certainty between those two. Measurements outside the ranges seen in training are refused.
""",
        "task": "classification",
        "labels": ["setosa", "versicolor", "virginica"],
        "example": [5.1, 3.5, 1.4, 0.2],
    }
    labels = {
        "sepal_length": "Sepal length",
        "sepal_width": "Sepal width",
        "petal_length": "Petal length",
        "petal_width": "Petal width",
    }
    features = features_from(names, X, labels, {n: "cm" for n in names}, step=0.1, decimals=1)
    training = {
        "dataset": "scikit-learn load_iris (Fisher 1936), 70/30 stratified split",
        "data_sha256": sha256_of(X),
        "rows": int(len(Xtr)),
        "algorithm": "LogisticRegression(max_iter=1000)",
        "library": f"scikit-learn {sklearn.__version__}, skl2onnx {skl2onnx.__version__}",
        "metrics": {"accuracy": round(accuracy_score(yte, model.predict(Xte)), 4)},
    }
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.9, 3.0, 5.1, 1.8]])
    save("iris", export(model, X, "iris"), card, features, training, names, Xtr, rows)

    # A second, more regularised version: what the tests upload and promote.
    v2 = LogisticRegression(max_iter=1000, C=0.05).fit(Xtr, ytr)
    (FIXTURES / "iris_v2.onnx").write_bytes(export(v2, X, "iris").SerializeToString())


def diabetes():
    data = datasets.load_diabetes(scaled=False)
    X, y = data.data, data.target
    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=SEED)
    model = Ridge(alpha=1.0).fit(Xtr, ytr)
    card = {
        "title": "Diabetes progression",
        "description": """
Estimates how far diabetes will have progressed **one year from now** (a quantitative score from
about 25 to 346; higher is worse) from ten baseline measurements of a patient, as in the
442-patient study of Efron et al. (2004).

A ridge regression: every feature moves the estimate linearly, so the result is a rough guide,
not a diagnosis. The typical error on held-out patients is given below as MAE.
""",
        "task": "regression",
        "example": [50, 1, 25.3, 93, 186, 111, 48, 4, 4.6, 90],
    }
    labels = {
        "age": ("Age", "years", 1),
        "sex": ("Sex (1 or 2)", None, 1),
        "bmi": ("Body mass index", "kg/m²", 0.1),
        "bp": ("Average blood pressure", "mm Hg", 1),
        "s1": ("Total serum cholesterol (tc)", "mg/dL", 1),
        "s2": ("Low-density lipoproteins (ldl)", "mg/dL", 0.1),
        "s3": ("High-density lipoproteins (hdl)", "mg/dL", 1),
        "s4": ("Total cholesterol / HDL (tch)", None, 0.01),
        "s5": ("Log of serum triglycerides (ltg)", None, 0.0001),
        "s6": ("Blood sugar level (glu)", "mg/dL", 1),
    }
    features = []
    for i, n in enumerate(names):
        label, unit, step = labels[n]
        f = {"name": n, "label": label, "type": "number", "min": round(float(X[:, i].min()), 4),
             "max": round(float(X[:, i].max()), 4), "step": step}
        if unit:
            f["unit"] = unit
        features.append(f)
    pred = model.predict(Xte)
    training = {
        "dataset": "scikit-learn load_diabetes(scaled=False) (Efron et al. 2004), 75/25 split",
        "data_sha256": sha256_of(X),
        "rows": int(len(Xtr)),
        "algorithm": "Ridge(alpha=1.0)",
        "library": f"scikit-learn {sklearn.__version__}, skl2onnx {skl2onnx.__version__}",
        "metrics": {
            "r2": round(r2_score(yte, pred), 4),
            "mae": round(mean_absolute_error(yte, pred), 3),
            "rmse": round(float(np.sqrt(mean_squared_error(yte, pred))), 3),
        },
    }
    rows = X[:4]
    save("diabetes", export(model, X, "diabetes"), card, features, training, names, Xtr, rows)


def digits():
    data = datasets.load_digits()
    X, y = data.data, data.target
    names = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=SEED, stratify=y)
    model = LogisticRegression(max_iter=5000, C=0.05).fit(Xtr, ytr)
    card = {
        "title": "Handwritten digits",
        "description": """
Reads a single handwritten digit, 0 to 9. Draw it in the box or upload a picture of one: the
picture is turned to grayscale, cropped to the ink, and scaled down to the **8×8 grid of ink
levels from 0 to 16** the model was trained on (the UCI optical digits data, 1,797 scans).

Dark ink on a light background works best; a thick pen helps, as the digit ends up tiny.
""",
        "task": "classification",
        "labels": [str(i) for i in range(10)],
        "image": {"width": 8, "height": 8, "max_value": 16.0, "invert": True},
    }
    features = [
        {"name": n, "label": n.replace("_", " "), "type": "image", "min": 0.0, "max": 16.0, "step": 1}
        for n in names
    ]
    training = {
        "dataset": "scikit-learn load_digits (UCI optical recognition of handwritten digits), 75/25 stratified split",
        "data_sha256": sha256_of(X),
        "rows": int(len(Xtr)),
        "algorithm": "LogisticRegression(max_iter=5000, C=0.05)",
        "library": f"scikit-learn {sklearn.__version__}, skl2onnx {skl2onnx.__version__}",
        "metrics": {"accuracy": round(accuracy_score(yte, model.predict(Xte)), 4)},
    }
    rows = X[:5]
    save("digits", export(model, X, "digits"), card, features, training, names, Xtr, rows)


def unsupported():
    """A real export that uses an operator tract lacks, for the upload-refusal tests."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = datasets.load_diabetes(scaled=False)
    model = make_pipeline(StandardScaler(), Ridge()).fit(data.data, data.target)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / "scaled_ridge.onnx").write_bytes(export(model, data.data, "tree").SerializeToString())


if __name__ == "__main__":
    unsupported()
    iris()
    diabetes()
    digits()
