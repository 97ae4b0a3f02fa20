"""`lmforge serve`: an HTTP inference server over model folders and export folders.

One job per module: `batcher` (Triton-style dynamic batching of single-pass requests),
`continuous` (decoding-step batching of generation), `prefix_cache` (recurrence memory after a
token prefix), `result_cache` (Redis or in-process), `metrics` (Prometheus). Layer L2: it loads
models through the bundle loader and export folders through `export`, and never imports `train`
or `torch.distributed`.
"""
