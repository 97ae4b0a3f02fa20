"""The LitServe peer of benchmarks/claim_c11_dynamic_batching.py, run as its own process:

    python benchmarks/litserve_peer.py FOLDER --port P --threads T

LitServe (the `bench` extra) serves the same model folder through the same tokenisation, padding,
forward pass and result shape as `lmforge serve`'s classify route (`lmforge.serve.heads`), behind
LitServe's own batching loop, so only the server differs.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import litserve
import torch

from lmforge.serve.heads import encode_job, run_jobs
from lmforge.serve.runtime import open_model

NAME = "sst2"
BATCH, DELAY_S = 64, 0.002
"""As the lmforge dynamic batcher in the benchmark: 64 rows, 2 ms."""


class ClassifyAPI(litserve.LitAPI):
    """The LitServe side: the same folder, tokenisation, padding, forward pass and result shape as
    `lmforge serve`'s classify route (lmforge.serve.heads), behind LitServe's batching loop."""

    def __init__(self, folder: str, threads: int):
        super().__init__(max_batch_size=BATCH, batch_timeout=DELAY_S, api_path="/v1/classify")
        self.folder, self.threads = folder, threads

    def setup(self, device: str) -> None:
        torch.set_num_threads(self.threads)
        self.model = open_model(self.folder, "eager", "cpu", NAME)
        self.head = self.model.head("classify")
        self.loop = asyncio.new_event_loop()  # run_jobs is a coroutine; one loop for every batch

    # LitServe builds its route from these two signatures: an unannotated `request` is read as the
    # JSON body and an unannotated return as a JSON answer (string annotations would break both).
    def decode_request(self, request):
        return encode_job(self.model, self.head, [request["input"]])

    def batch(self, jobs: list[Any]) -> list[Any]:
        return jobs

    def predict(self, jobs: list[Any]) -> list[list[dict[str, Any]]]:
        return self.loop.run_until_complete(run_jobs(self.head, jobs))

    def unbatch(self, results: list[Any]) -> list[Any]:
        return results

    def encode_response(self, results):
        return {"model": NAME, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    server = litserve.LitServer(ClassifyAPI(args.folder, args.threads), accelerator="cpu", devices=1,
                                workers_per_device=1, timeout=30)
    server.run(host="127.0.0.1", port=args.port, log_level="info", generate_client_file=False)


if __name__ == "__main__":
    main()
