"""Zoo models no converter of ours emits yet, built node by node with onnx.helper, with
onnxruntime's answers as fixtures (tests/fixtures/zoo/, the same format as zoo.py's):

- tree_tensor_attributes_regressor / _classifier: TreeEnsembleRegressor and
  TreeEnsembleClassifier (ai.onnx.ml opset 3) whose thresholds, weights and base values are
  given as tensors (`nodes_values_as_tensor`, `target_weights_as_tensor`,
  `class_weights_as_tensor`, `base_values_as_tensor`), as onnxmltools writes them;
- tree_ensemble_opset5_regressor / _average: the opset-5 `TreeEnsemble` (ai.onnx.ml 5: split
  nodes and leaves apart, modes as a uint8 tensor, integer aggregate and post-transform), what
  current onnxmltools and skl2onnx can emit;
- cast_map_linear: `CastMap` (map_form SPARSE) on a map(int64, float) input, in front of a
  `LinearRegressor` (`cast_map()` writes it alone);
- feature_vectorizer_linear: `FeatureVectorizer` joining three inputs (the spec wants one
  element type for all), one whole, one it cuts and one it pads, in front of a `LinearRegressor` (what onnxmltools writes for Spark ML's
  VectorAssembler); `python -c "import zoo_handmade; zoo_handmade.feature_vectorizer()"` writes it
  alone (onnxruntime 1.20 runs it).

Run by hand (not by CI), from this directory:

    python3 -m venv /tmp/zoo-hand && /tmp/zoo-hand/bin/pip install onnx==1.17.0 onnxruntime==1.22.1 numpy==1.26.4

(onnxruntime 1.20, the zoo's, has no opset-5 TreeEnsemble.)
    /tmp/zoo-hand/bin/python zoo_handmade.py
"""

import json
import pathlib

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "fixtures" / "zoo"
SEED = 20261204


def tensor(values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32))


def forest(rng, trees, depth, features):
    """Complete binary trees: node ids, features, thresholds, modes and children, and the leaves."""
    ids, feats, values, modes, true_ids, false_ids, tree_ids, leaves = [], [], [], [], [], [], [], []
    for t in range(trees):
        n = 2 ** (depth + 1) - 1
        for i in range(n):
            tree_ids.append(t)
            ids.append(i)
            if i < 2 ** depth - 1:
                feats.append(int(rng.integers(features)))
                # Thresholds on a 0.1 grid, so inputs land exactly on some of them.
                values.append(round(float(rng.integers(0, 30)) / 10, 1))
                modes.append(str(rng.choice(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT"])))
                true_ids.append(2 * i + 1)
                false_ids.append(2 * i + 2)
            else:
                feats.append(0)
                values.append(0.0)
                modes.append("LEAF")
                true_ids.append(0)
                false_ids.append(0)
                leaves.append((t, i))
    return dict(nodes_treeids=tree_ids, nodes_nodeids=ids, nodes_featureids=feats,
                nodes_modes=modes, nodes_truenodeids=true_ids, nodes_falsenodeids=false_ids,
                nodes_values_as_tensor=tensor(values)), leaves


def opset5(rng, trees, depth, features, targets):
    """The same complete trees in opset 5's layout: split nodes, then leaves, apart."""
    splits, feats, modes, roots = [], [], [], []
    true_ids, true_leaf, false_ids, false_leaf, leaf_targets, leaf_weights = [], [], [], [], [], []
    for _ in range(trees):
        base = len(splits)
        roots.append(base)
        inner = 2 ** depth - 1
        for i in range(inner):
            feats.append(int(rng.integers(features)))
            splits.append(round(float(rng.integers(0, 30)) / 10, 1))
            modes.append(int(rng.integers(0, 4)))
            for child, ids, leaf in ((2 * i + 1, true_ids, true_leaf), (2 * i + 2, false_ids, false_leaf)):
                if child < inner:
                    ids.append(base + child)
                    leaf.append(0)
                else:
                    ids.append(len(leaf_weights))
                    leaf.append(1)
                    leaf_targets.append(int(rng.integers(targets)))
                    leaf_weights.append(round(float(rng.normal(0, 1)), 4))
    return dict(tree_roots=roots, nodes_featureids=feats, nodes_splits=tensor(splits),
                nodes_modes=numpy_helper.from_array(np.asarray(modes, dtype=np.uint8)),
                nodes_truenodeids=true_ids, nodes_trueleafs=true_leaf,
                nodes_falsenodeids=false_ids, nodes_falseleafs=false_leaf,
                leaf_targetids=leaf_targets, leaf_weights=tensor(leaf_weights))


def save(name, description, node, inputs, outputs, x, ml_opset=3):
    graph = helper.make_graph([node], name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21 if ml_opset == 5 else 17),
                                                    helper.make_opsetid("ai.onnx.ml", ml_opset)])
    model.ir_version = 10 if ml_opset == 5 else 8
    (OUT / f"{name}.onnx").write_bytes(model.SerializeToString())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    results = session.run(None, {"X": x})
    fixture = {
        "model": f"{name}.onnx",
        "description": description,
        "operators": [f"ai.onnx.ml:{node.op_type}"],
        "inputs": {"X": {"dtype": "f32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}},
        "outputs": {},
    }
    for out, value in zip(outputs, results):
        value = np.asarray(value)
        dtype = "i64" if value.dtype == np.int64 else "f32"
        fixture["outputs"][out.name] = {"dtype": dtype, "shape": list(value.shape),
                                        "data": value.reshape(-1).tolist()}
    (OUT / f"{name}.json").write_text(json.dumps(fixture) + "\n")
    print(name, {k: v["shape"] for k, v in fixture["outputs"].items()})


def write_graph(name, nodes, inputs, outputs):
    """Writes a graph of several nodes (opset 17, ai.onnx.ml 3) as `<name>.onnx`; an onnxruntime
    session on it."""
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    (OUT / f"{name}.onnx").write_bytes(model.SerializeToString())
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def feature_vectorizer():
    rng = np.random.default_rng(SEED)
    n = 16
    inputs = {
        "measures": rng.normal(0, 2, (n, 3)).astype(np.float32),
        "counts": rng.integers(0, 9, (n, 2)).astype(np.float32),
        "flag": rng.integers(0, 2, (n, 1)).astype(np.float32),
    }
    # measures gives 3 columns, counts 1 of its 2 (cut), flag 1 and a zero (padded): 6 columns.
    nodes = [
        helper.make_node("FeatureVectorizer", ["measures", "counts", "flag"], ["joined"],
                         domain="ai.onnx.ml", inputdimensions=[3, 1, 2]),
        helper.make_node("LinearRegressor", ["joined"], ["variable"], domain="ai.onnx.ml",
                         coefficients=[0.5, -1.25, 2.0, 0.75, 3.0, 100.0], intercepts=[0.1]),
    ]
    infos = [helper.make_tensor_value_info("measures", TensorProto.FLOAT, [None, 3]),
             helper.make_tensor_value_info("counts", TensorProto.FLOAT, [None, 2]),
             helper.make_tensor_value_info("flag", TensorProto.FLOAT, [None, 1])]
    out = helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])
    name = "feature_vectorizer_linear"
    session = write_graph(name, nodes, infos, [out])
    (result,) = session.run(None, inputs)
    dtypes = {np.float32: "f32", np.int64: "i64"}
    fixture = {
        "model": f"{name}.onnx",
        "description": "FeatureVectorizer (three inputs: one whole, one cut to 1 column, one padded "
                       "to 2) in front of a LinearRegressor",
        "operators": ["ai.onnx.ml:FeatureVectorizer", "ai.onnx.ml:LinearRegressor"],
        "inputs": {k: {"dtype": dtypes[v.dtype.type], "shape": list(v.shape), "data": v.reshape(-1).tolist()}
                   for k, v in inputs.items()},
        "outputs": {"variable": {"dtype": "f32", "shape": list(result.shape),
                                 "data": result.reshape(-1).tolist()}},
    }
    (OUT / f"{name}.json").write_text(json.dumps(fixture) + "\n")
    print(name, result.shape)


def cast_map():
    """cast_map_linear: `CastMap` (map_form SPARSE, max_map 5: keys 0 to 4 become columns, 0
    where a key is absent) in front of a `LinearRegressor`. onnxruntime takes one map a run;
    the fixture keeps each row's map ("maps", keys as text as JSON has them) and the rows laid
    out by key ("inputs"). `python -c "import zoo_handmade; zoo_handmade.cast_map()"`."""
    rng = np.random.default_rng(SEED)
    nodes = [
        helper.make_node("CastMap", ["X"], ["dense"], domain="ai.onnx.ml", map_form="SPARSE",
                         max_map=5, cast_to="TO_FLOAT"),
        helper.make_node("LinearRegressor", ["dense"], ["variable"], domain="ai.onnx.ml",
                         coefficients=[0.5, -1.25, 2.0, 0.75, 3.0], intercepts=[0.1]),
    ]
    x_info = helper.make_value_info("X", helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    out = helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])
    name = "cast_map_linear"
    session = write_graph(name, nodes, [x_info], [out])
    maps = []
    for _ in range(16):
        keys = sorted(rng.choice(5, rng.integers(1, 6), replace=False).tolist())
        maps.append({int(k): float(np.float32(rng.normal(0, 2))) for k in keys})
    results = [session.run(None, {"X": m})[0] for m in maps]
    dense = np.array([[m.get(k, 0.0) for k in range(5)] for m in maps], dtype=np.float32)
    result = np.concatenate(results).astype(np.float32)
    fixture = {
        "model": f"{name}.onnx",
        "description": "CastMap (SPARSE, max_map 5) in front of a LinearRegressor",
        "operators": ["ai.onnx.ml:CastMap", "ai.onnx.ml:LinearRegressor"],
        "columns": {"X": [str(k) for k in range(5)]},
        "maps": [{str(k): v for k, v in m.items()} for m in maps],
        "inputs": {"X": {"dtype": "f32", "shape": list(dense.shape), "data": dense.reshape(-1).tolist()}},
        "outputs": {"variable": {"dtype": "f32", "shape": list(result.shape),
                                 "data": result.reshape(-1).tolist()}},
    }
    (OUT / f"{name}.json").write_text(json.dumps(fixture) + "\n")
    print(name, result.shape)


def unknown_operator():
    """tests/fixtures/unknown_operator.onnx: an onnxruntime contrib operator (com.microsoft
    FusedGemm, what onnxruntime's optimiser writes), which Plinth refuses by name."""
    node = helper.make_node("FusedGemm", ["X", "W"], ["Y"], domain="com.microsoft")
    graph = helper.make_graph([node], "unknown_operator",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])],
                              [numpy_helper.from_array(np.eye(2, dtype=np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    (HERE.parent / "tests" / "fixtures" / "unknown_operator.onnx").write_bytes(model.SerializeToString())


def main():
    rng = np.random.default_rng(SEED)
    features = 4
    # Inputs on the thresholds' 0.1 grid and between it.
    x = np.concatenate([rng.integers(0, 30, (8, features)) / 10,
                        rng.random((8, features)) * 3]).astype(np.float32)
    x_info = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, features])

    attrs, leaves = forest(rng, trees=5, depth=3, features=features)
    node = helper.make_node(
        "TreeEnsembleRegressor", ["X"], ["variable"], domain="ai.onnx.ml", n_targets=2,
        target_treeids=[t for t, _ in leaves for _ in range(2)],
        target_nodeids=[i for _, i in leaves for _ in range(2)],
        target_ids=[k for _ in leaves for k in range(2)],
        target_weights_as_tensor=tensor(rng.normal(0, 1, 2 * len(leaves)).round(4)),
        base_values_as_tensor=tensor([0.5, -1.25]), aggregate_function="SUM", **attrs)
    save("tree_tensor_attributes_regressor",
         "TreeEnsembleRegressor, 5 trees, 2 targets, thresholds, weights and base values as tensors",
         node, [x_info], [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 2])], x)

    attrs, leaves = forest(rng, trees=6, depth=3, features=features)
    node = helper.make_node(
        "TreeEnsembleClassifier", ["X"], ["label", "probabilities"], domain="ai.onnx.ml",
        classlabels_int64s=[0, 1, 2],
        class_treeids=[t for t, _ in leaves for _ in range(3)],
        class_nodeids=[i for _, i in leaves for _ in range(3)],
        class_ids=[k for _ in leaves for k in range(3)],
        class_weights_as_tensor=tensor(rng.normal(0, 1, 3 * len(leaves)).round(4)),
        post_transform="SOFTMAX", **attrs)
    save("tree_tensor_attributes_classifier",
         "TreeEnsembleClassifier, 6 trees, 3 classes, softmax, thresholds and weights as tensors",
         node, [x_info], [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                          helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])], x)

    for name, targets, aggregate, post, what in (
        ("tree_ensemble_opset5_regressor", 2, 1, 0, "2 targets, summed"),
        # No post-transform: onnxruntime 1.22 reads post_transform's numbers in its own order
        # (1 as LOGISTIC, 2 as SOFTMAX), not the specification's (1 SOFTMAX, 2 LOGISTIC), which
        # Plinth follows; see README, "Model coverage".
        ("tree_ensemble_opset5_average", 3, 0, 0, "3 scores, averaged"),
    ):
        node = helper.make_node("TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml",
                                n_targets=targets, aggregate_function=aggregate,
                                post_transform=post, **opset5(rng, 7, 3, features, targets))
        save(name, f"TreeEnsemble (ai.onnx.ml opset 5), 7 trees, {what}", node, [x_info],
             [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, targets])], x, ml_opset=5)


if __name__ == "__main__":
    main()
    feature_vectorizer()
    unknown_operator()
