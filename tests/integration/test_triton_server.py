"""The exported Triton repository served by a real Triton Inference Server and queried with
`tritonclient.http`.

The server is the CPU build inside `nvidia-pytriton`'s wheel, installed by `make test` in a venv of
its own (`.venv-triton`: it pins numpy<2, which the main venv cannot take). That build carries only
Triton's Python backend, so it serves the repository's `<name>_python` model, which runs the
exported ONNX file with ONNX Runtime; the onnxruntime and pytorch backend models need a full Triton
(NGC's container) and fail here with "unable to find backend library for backend 'onnxruntime'".
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from processes import free_port, kill_tree, start_in_session

from lmforge.export.triton import MAX_QUEUE_DELAY_US

http = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (the dev extra)")

TRITON_ENV = Path(os.environ.get("LMFORGE_TRITON_ENV", Path(__file__).parents[2] / ".venv-triton"))
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
SITE = TRITON_ENV / "lib" / f"python{PYTHON}" / "site-packages"
SERVER = SITE / "pytriton" / "tritonserver"


@pytest.fixture
def triton(tmp_path):
    """Start Triton with the Python backend (and the stub built for this Python) on free ports."""
    if not (SERVER / "bin" / "tritonserver").exists():
        pytest.skip(f"no Triton server at {SERVER} (`make test` installs it in .venv-triton)")
    backends = tmp_path / "backends"
    shutil.copytree(SERVER / "backends" / "python", backends / "python")
    shutil.copy(SERVER / "python_backend_stubs" / PYTHON / "triton_python_backend_stub", backends / "python")
    # The stub links libpython and pytriton's own CUDA runtime stub (env-probe.md: without this
    # path it picks up the system's libpython 3.11.2 and fails on a mismatched _thread.RLock).
    libraries = [sysconfig.get_config_var("LIBDIR"), str(SITE / "nvidia_pytriton.libs")]
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(libraries)}

    def start(repository: Path, model: str) -> http.InferenceServerClient:
        port = free_port()
        ports = [f"--http-port={port}", f"--grpc-port={free_port()}", f"--metrics-port={free_port()}"]
        command = [str(SERVER / "bin" / "tritonserver"), f"--model-repository={repository}"]
        command += [
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            f"--load-model={model}",
        ]
        log = (tmp_path / "tritonserver.log").open("w")
        processes.append(start_in_session([*command, *ports], env=env, stdout=log, stderr=log))
        client = http.InferenceServerClient(f"127.0.0.1:{port}", concurrency=16)
        for _ in range(600):
            if processes[-1].poll() is not None:
                pytest.fail(f"tritonserver exited:\n{(tmp_path / 'tritonserver.log').read_text()[-3000:]}")
            try:
                if client.is_server_ready():
                    return client
            except (ConnectionError, OSError):
                pass
            time.sleep(0.1)
        pytest.fail(f"tritonserver not ready:\n{(tmp_path / 'tritonserver.log').read_text()[-3000:]}")

    processes: list = []
    yield start
    for process in processes:
        kill_tree(process)
        process.wait()


def deploy_in(repository: Path, model: str) -> None:
    """What a deployment adds to the Python model's config: the Python environment it runs in. The
    test also lets the batcher wait up to 0.5 s, so one burst of requests becomes one batch."""
    config = repository / model / "config.pbtxt"
    text = config.read_text().replace(
        f"max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}", "max_queue_delay_microseconds: 500000"
    )
    config.write_text(
        text
        + f'parameters {{\n  key: "EXECUTION_ENV_PATH"\n  value: {{ string_value: "{TRITON_ENV}" }}\n}}\n'
    )


def test_triton_serves_the_export_and_batches_requests(export, classifier_folder, triton, tmp_path):
    model = classifier_folder["model"]
    repository = export(model, "--format", "triton", "--out", tmp_path / "repo")
    name = f"{model.name}_python"
    deploy_in(repository, name)
    client = triton(repository, name)
    assert client.is_model_ready(name)
    assert client.get_model_config(name)["max_batch_size"] == 64

    session = onnxruntime.InferenceSession(
        str(repository / model.name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    requests = []
    for rows in (1, 2, 3, 1, 2, 1, 4, 1):  # concurrent, so the dynamic batcher may merge them
        ids = rng.integers(1, 200, size=(rows, 6), dtype=np.int64)
        ids[0, 4:] = 0
        inputs = [
            http.InferInput("input_ids", ids.shape, "INT64"),
            http.InferInput("attention_mask", ids.shape, "INT64"),
        ]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy((ids > 0).astype(np.int64))
        requests.append((ids, client.async_infer(name, inputs)))
    for ids, pending in requests:
        served = pending.get_result().as_numpy("logits")
        (expected,) = session.run(
            ["logits"], {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)}
        )
        assert served.shape == expected.shape
        np.testing.assert_allclose(served, expected, atol=1e-5)
    (stats,) = client.get_inference_statistics(name)["model_stats"]
    assert stats["inference_count"] == 15  # rows
    assert stats["execution_count"] < len(requests)  # some requests were served together
