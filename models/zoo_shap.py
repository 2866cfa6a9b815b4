"""Expected explanations for the zoo's tree models, from the `shap` package.

For every zoo model that is one tree ensemble on one float input (scikit-learn's trees, forests
and boosting, XGBoost, LightGBM; with and without gaps), this reads the ensemble out of the ONNX
file itself, counts each node's cover on the model's training rows (the reference data; NaN
takes the node's missing-value track), and hands the trees to `shap.TreeExplainer` as a
dictionary model with those covers. Its path-dependent TreeSHAP values on the zoo's test rows,
per target of the raw score (before base values and post-transform), are what Plinth's own
TreeSHAP must give within 1e-5.

Reading the trees from the ONNX file rather than from the library's model keeps the comparison
about the explanation: the trees, thresholds and covers are the same on both sides, and shap
computes independently of Plinth.

Run by hand (not by CI), from this directory, with zoo.py's environment plus `shap`:

    .zoo/bin/pip install shap==0.49.1
    .zoo/bin/python zoo_shap.py

Writes `../tests/fixtures/zoo/shap/<name>.json`.
"""

import json
import sys

import numpy as np
import onnx
import shap
from onnx import numpy_helper

from zoo import OUT, SEED, breast_cancer, diabetes, digits, iris
from zoo_gaps import with_gaps

SHAP = OUT / "shap"
DATA = {"iris": iris, "diabetes": diabetes, "digits": digits, "breast cancer": breast_cancer}


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            if a.type == onnx.AttributeProto.FLOATS:
                return list(a.floats)
            if a.type == onnx.AttributeProto.INTS:
                return list(a.ints)
            if a.type == onnx.AttributeProto.STRINGS:
                return [s.decode() for s in a.strings]
            if a.type == onnx.AttributeProto.STRING:
                return a.s.decode()
            if a.type == onnx.AttributeProto.TENSOR:
                return list(numpy_helper.to_array(a.t).ravel())
            if a.type == onnx.AttributeProto.INT:
                return a.i
    return default


def reference_rows(description, name):
    """The model's training rows (what zoo.py and zoo_gaps.py trained it on)."""
    key = next((k for k in DATA if f"on {k}" in description), None)
    if key is None:
        return None
    xtr = DATA[key]()[0]
    if name.endswith("_gaps"):
        xtr = with_gaps(xtr, 0.15, SEED)
    return xtr.astype(np.float32)


def trees_of(node, n_targets):
    """The ensemble as shap's dictionary trees, leaf values per target."""
    prefix = "class" if node.op_type == "TreeEnsembleClassifier" else "target"
    tree_ids = attr(node, "nodes_treeids")
    node_ids = attr(node, "nodes_nodeids")
    features = attr(node, "nodes_featureids")
    modes = attr(node, "nodes_modes")
    values = attr(node, "nodes_values") or attr(node, "nodes_values_as_tensor")
    true_ids = attr(node, "nodes_truenodeids")
    false_ids = attr(node, "nodes_falsenodeids")
    missing = attr(node, "nodes_missing_value_tracks_true") or [0] * len(node_ids)
    w_trees = attr(node, f"{prefix}_treeids")
    w_nodes = attr(node, f"{prefix}_nodeids")
    w_targets = attr(node, f"{prefix}_ids")
    weights = attr(node, f"{prefix}_weights") or attr(node, f"{prefix}_weights_as_tensor")
    trees = {}
    for i, t in enumerate(tree_ids):
        trees.setdefault(t, {})[node_ids[i]] = i
    out = []
    for t in sorted(trees):
        ids = sorted(trees[t])
        local = {nid: k for k, nid in enumerate(ids)}
        n = len(ids)
        left = np.full(n, -1, np.int32)
        right = np.full(n, -1, np.int32)
        default = np.full(n, -1, np.int32)
        feature = np.zeros(n, np.int32)
        threshold = np.zeros(n, np.float64)
        value = np.zeros((n, n_targets), np.float64)
        for nid in ids:
            i, k = trees[t][nid], local[nid]
            mode = modes[i]
            if mode == "LEAF":
                continue
            yes, no = local[true_ids[i]], local[false_ids[i]]
            th = np.float32(values[i])
            # shap goes left when x <= threshold: each mode as such a test on float32 values.
            if mode == "BRANCH_LEQ":
                l, r, th64 = yes, no, float(th)
            elif mode == "BRANCH_LT":
                l, r, th64 = yes, no, float(np.nextafter(th, np.float32(-np.inf)))
            elif mode == "BRANCH_GT":
                l, r, th64 = no, yes, float(th)
            elif mode == "BRANCH_GTE":
                l, r, th64 = no, yes, float(np.nextafter(th, np.float32(-np.inf)))
            else:
                raise ValueError(f"mode {mode} has no x <= threshold form")
            left[k], right[k], threshold[k], feature[k] = l, r, th64, features[i]
            default[k] = yes if missing[i] else no
        for j, t_id in enumerate(w_trees):
            if t_id == t:
                value[local[w_nodes[j]], w_targets[j]] += weights[j]
        out.append({"children_left": left, "children_right": right, "children_default": default,
                    "features": feature, "thresholds": threshold, "values": value})
    return out


def covers(tree, x):
    """How many rows of x reach each node (NaN down the node's default child)."""
    c = np.zeros(len(tree["features"]))
    for row in x:
        k = 0
        while True:
            c[k] += 1
            if tree["children_left"][k] < 0:
                break
            v = row[tree["features"][k]]
            if np.isnan(v):
                k = tree["children_default"][k]
            elif v <= tree["thresholds"][k]:
                k = tree["children_left"][k]
            else:
                k = tree["children_right"][k]
    return c


COLUMN_WISE = {"Scaler", "Imputer", "Cast", "Identity", "Reshape", "Flatten"}


def explain_linear(name, fixture, model, node):
    """shap.LinearExplainer on what the linear node sees (onnxruntime computes it from the rows,
    through the model's own scaler and imputer), with the coefficients from the ONNX file."""
    import onnxruntime as ort
    reference = reference_rows(fixture["description"], name)
    if reference is None:
        return None
    # Only column-wise steps between the input and the linear node.
    producers = {o: n for n in model.graph.node for o in n.output}
    at = node.input[0]
    while at in producers:
        if producers[at].op_type not in COLUMN_WISE:
            return None
        at = producers[at].input[0]
    inner = onnx.ModelProto()
    inner.CopyFrom(model)
    del inner.graph.output[:]
    inner.graph.output.append(onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(inner.SerializeToString(), providers=["CPUExecutionProvider"])
    x_name = model.graph.input[0].name
    rows = np.array(fixture["inputs"][x_name]["data"], dtype=np.float64)
    rows = rows.reshape(fixture["inputs"][x_name]["shape"]).astype(np.float32)
    z_ref = session.run(None, {x_name: reference})[0].astype(np.float64)
    z_rows = session.run(None, {x_name: rows})[0].astype(np.float64)
    coef = np.array(attr(node, "coefficients"), dtype=np.float64)
    intercepts = np.array(attr(node, "intercepts") or [0.0], dtype=np.float64)
    targets = len(intercepts) if node.op_type == "LinearClassifier" else attr(node, "targets", 1)
    coef = coef.reshape(targets, -1)
    masker = shap.maskers.Independent(z_ref, max_samples=len(z_ref))
    explainer = shap.LinearExplainer((coef if targets > 1 else coef[0], intercepts if targets > 1 else intercepts[0]), masker)
    values = np.asarray(explainer.shap_values(z_rows))
    if values.ndim == 2:
        values = values[:, :, None]
    elif values.shape[0] == targets and values.shape[1] == len(rows) and targets > 1:
        values = np.transpose(values, (1, 2, 0))
    expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    raw = z_rows @ coef.T + intercepts
    additivity = np.max(np.abs(expected + values.sum(axis=1) - raw) / np.maximum(np.abs(raw), 1.0))
    assert additivity < 1e-6, f"{name}: shap's values do not add up ({additivity})"
    write(name, "linear", reference, rows, targets, expected, raw, values,
          "the linear node's mean inputs over the model's training rows, the reference below")
    return additivity


def write(name, kind, reference, rows, targets, expected, raw, values, base):
    out = {
        "model": f"{name}.onnx",
        "kind": kind,
        "shap": shap.__version__,
        "base": base,
        "reference": {"shape": list(reference.shape),
                      "data": [None if np.isnan(v) else float(v) for v in reference.ravel()]},
        "rows": {"shape": list(rows.shape),
                 "data": [None if np.isnan(v) else float(v) for v in rows.ravel()]},
        "targets": int(targets),
        "expected": expected.tolist(),
        "raw": raw.ravel().tolist(),
        "contributions": values.ravel().tolist(),
    }
    SHAP.mkdir(exist_ok=True)
    (SHAP / f"{name}.json").write_text(json.dumps(out))


def explain(name):
    fixture = json.loads((OUT / f"{name}.json").read_text())
    model = onnx.load(str(OUT / f"{name}.onnx"))
    if len(model.graph.input) != 1:
        return None
    linear = [n for n in model.graph.node if n.op_type in ("LinearRegressor", "LinearClassifier")]
    nodes = [n for n in model.graph.node if n.op_type.startswith("TreeEnsemble")]
    if len(linear) == 1 and not nodes:
        return explain_linear(name, fixture, model, linear[0])
    if len(nodes) != 1:
        return None
    node = nodes[0]
    reference = reference_rows(fixture["description"], name)
    if reference is None:
        return None
    if node.op_type == "TreeEnsembleClassifier":
        labels = attr(node, "classlabels_int64s") or attr(node, "classlabels_strings")
        n_targets = len(labels)
    else:
        n_targets = attr(node, "n_targets", 1)
    trees = trees_of(node, n_targets)
    aggregate = attr(node, "aggregate_function", "SUM")
    scale = 1.0 / len(trees) if aggregate == "AVERAGE" else 1.0
    for tree in trees:
        tree["values"] = tree["values"] * scale
        tree["node_sample_weight"] = covers(tree, reference)
        inner = tree["children_left"] >= 0
        if np.any(tree["node_sample_weight"][inner] == 0):
            print(f"{name}: a branch no reference row reaches; skipped", file=sys.stderr)
            return None
    rows = np.array(fixture["inputs"]["X"]["data"], dtype=np.float64)
    rows = rows.reshape(fixture["inputs"]["X"]["shape"]).astype(np.float32)
    explainer = shap.TreeExplainer({"trees": trees, "base_offset": 0.0, "tree_output": "raw_value",
                                    "objective": "squared_error"})
    values = np.asarray(explainer.shap_values(rows.astype(np.float64), check_additivity=False))
    # (rows, features, targets) whatever shap's version returns.
    if values.ndim == 2:
        values = values[:, :, None]
    elif values.shape[0] == n_targets and values.shape[1] == len(rows) and n_targets > 1:
        values = np.transpose(values, (1, 2, 0))
    expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    raw = np.zeros((len(rows), n_targets))
    for tree in trees:
        for r, row in enumerate(rows):
            k = 0
            while tree["children_left"][k] >= 0:
                v = row[tree["features"][k]]
                k = (tree["children_default"][k] if np.isnan(v) else
                     tree["children_left"][k] if v <= tree["thresholds"][k] else tree["children_right"][k])
            raw[r] += tree["values"][k]
    additivity = np.max(np.abs(expected + values.sum(axis=1) - raw) / np.maximum(np.abs(raw), 1.0))
    assert additivity < 1e-6, f"{name}: shap's values do not add up ({additivity})"
    write(name, "trees", reference, rows, n_targets, expected, raw, values,
          "covers counted on the model's training rows, the reference below")
    return additivity


def main():
    print(f"shap {shap.__version__}", file=sys.stderr)
    for path in sorted(OUT.glob("*.json")):
        name = path.name[: -len(".json")]
        done = explain(name)
        if done is not None:
            print(f"{name}: explained, additivity within {done:.1e}", file=sys.stderr)


if __name__ == "__main__":
    main()
