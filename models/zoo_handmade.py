"""Zoo models no converter of ours emits yet, built node by node with onnx.helper, with
onnxruntime's answers as fixtures (tests/fixtures/zoo/, the same format as zoo.py's):

- tree_tensor_attributes_regressor / _classifier: TreeEnsembleRegressor and
  TreeEnsembleClassifier (ai.onnx.ml opset 3) whose thresholds, weights and base values are
  given as tensors (`nodes_values_as_tensor`, `target_weights_as_tensor`,
  `class_weights_as_tensor`, `base_values_as_tensor`), as onnxmltools writes them.

Run by hand (not by CI), from this directory:

    python3 -m venv /tmp/zoo-hand && /tmp/zoo-hand/bin/pip install onnx==1.17.0 onnxruntime==1.20.1 numpy==1.26.4
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


def save(name, description, node, inputs, outputs, x):
    graph = helper.make_graph([node], name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
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


if __name__ == "__main__":
    main()
