"""The Python way to score a file, for scripts/bench-batch: pandas.read_csv -> onnxruntime ->
DataFrame.to_csv, the input's columns followed by the prediction and, for classifiers, one
probability column per class. Stores nothing.

Usage: python batch_baseline.py MODEL.onnx INPUT.csv OUTPUT.csv
"""

import sys

import numpy as np
import onnxruntime as ort
import pandas as pd


def main():
    model, src, dst = sys.argv[1:4]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    df = pd.read_csv(src)
    # The model's features are every column but the id, in the file's order.
    features = [c for c in df.columns if c != "id"]
    dtype = np.float64 if "double" in inp.type else np.float32
    x = df[features].to_numpy(dtype=dtype)
    outputs = session.run(None, {inp.name: x})
    out = df
    out["prediction"] = np.asarray(outputs[0]).reshape(len(df), -1)[:, 0]
    if len(outputs) > 1:
        probs = outputs[1]
        if isinstance(probs, list):  # ZipMap: a dict per row
            probs = pd.DataFrame(probs)
            names = list(probs.columns)
            probs = probs.to_numpy()
        else:
            names = list(range(probs.shape[1]))
        for i, name in enumerate(names):
            out[f"probability_{name}"] = probs[:, i]
    out.to_csv(dst, index=False)


if __name__ == "__main__":
    main()
