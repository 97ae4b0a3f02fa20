"""Every runtime serves a head behind the same array interface, and agrees with the eager model."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.artifacts import ArtifactError
from lmforge.model.inputs import encode_text, pad_batch
from lmforge.serve.runtime import open_model

TEXTS = ["a gripping , funny film", "dull", "the plot makes no sense and the actors look bored"]


def arrays(model, head):
    idx, mask = pad_batch([encode_text(model.tokenizer, t, head.max_len) for t in TEXTS])
    return idx.numpy(), mask.long().numpy()


@pytest.fixture(scope="module")
def onnx_export(export, classifier_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "onnx"
    return export(classifier_folder["model"], "--format", "onnx", "--out", out)


def test_eager_onnx_and_int8_heads_agree(classifier_folder, onnx_export):
    eager = open_model(classifier_folder["model"], "eager", device="cpu")
    head = eager.head("classify")
    reference = head.forward(*arrays(eager, head))
    assert reference.shape == (len(TEXTS), len(head.labels))

    onnx = open_model(onnx_export, "onnx")
    assert onnx.lm is None and onnx.head("classify").labels == head.labels
    np.testing.assert_allclose(onnx.head("classify").forward(*arrays(onnx, head)), reference, atol=1e-4)

    int8 = open_model(classifier_folder["model"], "int8", device="cpu")
    quantized = int8.head("classify").forward(*arrays(int8, head))
    assert not np.array_equal(quantized, reference)  # the weights did change
    np.testing.assert_allclose(quantized, reference, atol=0.2)
    assert eager.version == int8.version != onnx.version  # the folder's digest; the runtime is separate


def test_a_folder_that_does_not_fit_the_runtime_is_named(classifier_folder, onnx_export):
    with pytest.raises(ArtifactError, match="runtime onnx needs an export folder"):
        open_model(classifier_folder["model"], "onnx")
    with pytest.raises(ArtifactError, match="runtime eager needs a model folder"):
        open_model(onnx_export, "eager")
    with pytest.raises(ArtifactError, match="runtime 'fast': expected one of eager, int8, onnx, onnx-int8"):
        open_model(classifier_folder["model"], "fast")
    with pytest.raises(ArtifactError, match="exactly one ner head"):
        open_model(onnx_export, "onnx").head("ner")
