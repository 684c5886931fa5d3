"""``attnkit serve``: every model that :func:`attnkit.tasks.runs.open_run` opens behind an HTTP API (FastAPI
on uvicorn) with dynamic batching, streaming, limits, metrics and a web page; docs/serve.md describes it.

* :mod:`~attnkit.serve.app`: the endpoints, errors and the guard (body size, API key, metrics);
* :mod:`~attnkit.serve.batching`: a queue and a worker thread per model, batches formed from the queue;
* :mod:`~attnkit.serve.continuous`: continuous batching of GPT generation over one KV-cached session;
* :mod:`~attnkit.serve.served`: a loaded model's requests turned into work, and that work run;
* :mod:`~attnkit.serve.server`: uvicorn, with a graceful exit on SIGTERM.
"""
