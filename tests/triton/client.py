"""Drives Plinth with tritonclient's HTTP client, unchanged: the way a Triton user would.

Usage: python client.py HOST:PORT TOKEN FIXTURE_JSON
Exits non-zero, with the reason, when anything differs from what Triton would give.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main() -> None:
    url, token, fixture_path = sys.argv[1], sys.argv[2], sys.argv[3]
    fixture = json.load(open(fixture_path))
    auth = {"Authorization": f"Bearer {token}"}

    def headers() -> dict:
        # A fresh dict per call: tritonclient adds Inference-Header-Content-Length to the dict
        # it is given, which would leak into the next request.
        return dict(auth)

    client = httpclient.InferenceServerClient(url=url)

    assert client.is_server_live(headers=headers()), "server not live"
    assert client.is_server_ready(headers=headers()), "server not ready"
    assert client.is_model_ready("iris", headers=headers()), "iris not ready"
    meta = client.get_model_metadata("iris", headers=headers())
    assert meta["platform"] == "onnx_onnxv1", meta
    assert meta["inputs"][0]["shape"] == [-1, 4], meta
    name = meta["inputs"][0]["name"]

    rows = np.array(fixture["rows"], dtype=np.float32)
    expected_labels = np.array(fixture["outputs"]["label"], dtype=np.int64)
    expected_probs = np.array(fixture["outputs"]["probabilities"], dtype=np.float32)

    for binary in (True, False):
        tensor = httpclient.InferInput(name, list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("label", binary_data=binary),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        result = client.infer("iris", [tensor], outputs=outputs, request_id=f"tc-{binary}", headers=headers())
        labels = result.as_numpy("label")
        probs = result.as_numpy("probabilities")
        assert (labels == expected_labels).all(), (binary, labels, expected_labels)
        assert np.allclose(probs, expected_probs, atol=1e-5), (binary, probs, expected_probs)
        assert result.get_response()["id"] == f"tc-{binary}", result.get_response()

    # Default outputs (all, binary) and a specific version.
    tensor = httpclient.InferInput(name, list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("iris", [tensor], model_version="1", headers=headers())
    assert (result.as_numpy("label") == expected_labels).all()

    # Errors surface as InferenceServerException with the server's message.
    try:
        client.get_model_metadata("no-such-model", headers=headers())
        raise AssertionError("unknown model accepted")
    except InferenceServerException as e:
        assert "no-such-model" in str(e), str(e)
    bad = httpclient.InferInput(name, [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    try:
        client.infer("iris", [bad], headers=headers())
        raise AssertionError("wrong shape accepted")
    except InferenceServerException as e:
        assert "shape" in str(e), str(e)
    print("tritonclient: ok")


if __name__ == "__main__":
    main()
