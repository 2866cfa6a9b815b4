"""The Python way to compare two model versions over their reference rows, for
scripts/bench-compare: pandas.read_csv each reference file, run both models with onnxruntime,
then agreement and the confusion between their labels with numpy. Keeps nothing, serves
nothing, checks no row against a card: the floor a person would write in a notebook.

Usage: python compare_baseline.py A.onnx B.onnx REFERENCE.csv [REFERENCE.csv ...]
Prints the rows compared, the rows with the same label and the confusion counts as JSON.
"""

import json
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd


def labels(session, x):
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x})[0]).reshape(-1).astype(np.int64)


def main():
    a_model, b_model, *files = sys.argv[1:]
    a = ort.InferenceSession(a_model, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(b_model, providers=["CPUExecutionProvider"])
    rows = same = 0
    confusion = {}
    for path in files:
        x = pd.read_csv(path).to_numpy(dtype=np.float32)
        la, lb = labels(a, x), labels(b, x)
        rows += len(x)
        same += int((la == lb).sum())
        pairs, counts = np.unique(np.stack([la, lb], axis=1), axis=0, return_counts=True)
        for (i, j), n in zip(pairs.tolist(), counts.tolist()):
            confusion[f"{i},{j}"] = confusion.get(f"{i},{j}", 0) + n
    print(json.dumps({"compared": rows, "agreeing": same, "confusion": confusion}))


if __name__ == "__main__":
    main()
