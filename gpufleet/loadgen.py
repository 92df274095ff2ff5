"""Bounded load against a Triton endpoint (a proxy or a replica), with latency percentiles."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import tritonclient.http as triton_http

from gpufleet.spec import ModelSpec, TensorSpec

NUMPY_DTYPES = {
    "FP32": np.float32,
    "FP16": np.float16,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT8": np.int8,
}


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    wall_s: float
    latencies_ms: list[float]

    @property
    def throughput_rps(self) -> float:
        return (self.requests - self.errors) / self.wall_s if self.wall_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def example_inputs(model: ModelSpec, batch: int = 1, seed: int = 0) -> list[triton_http.InferInput]:
    """Deterministic inputs matching the model's signature (-1 dims become 1)."""
    rng = np.random.default_rng(seed)
    inputs = []
    for t in model.inputs:
        shape = _shape(t, batch if model.triton.max_batch_size > 0 else None)
        data = rng.standard_normal(shape).astype(NUMPY_DTYPES.get(t.dtype, np.float32))
        tensor = triton_http.InferInput(t.name, list(shape), t.dtype)
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def _shape(t: TensorSpec, batch: int | None) -> tuple[int, ...]:
    dims = tuple(1 if d == -1 else d for d in t.dims)
    return (batch, *dims) if batch is not None else dims


def infer_once(
    url: str, model: ModelSpec, version: str = "", seed: int = 0
) -> dict[str, npt.NDArray[np.generic]]:
    with triton_http.InferenceServerClient(url.removeprefix("http://"), network_timeout=30) as c:
        result = c.infer(model.name, example_inputs(model, seed=seed), model_version=version)
        return {o.name: result.as_numpy(o.name) for o in model.outputs}


def run_load(
    url: str,
    model: ModelSpec,
    requests: int,
    concurrency: int = 4,
    max_seconds: float = 120.0,
    on_done: Callable[[int], None] | None = None,
) -> LoadResult:
    """Send at most `requests` infer calls over `concurrency` connections, for at most `max_seconds`."""
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + max_seconds
    inputs = example_inputs(model)

    def worker() -> None:
        nonlocal errors
        with triton_http.InferenceServerClient(url.removeprefix("http://"), network_timeout=30) as c:
            while time.monotonic() < deadline:
                with lock:
                    if next(counter, None) is None:
                        return
                t0 = time.perf_counter()
                try:
                    c.infer(model.name, inputs)
                    ok = True
                except Exception:
                    ok = False
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors += 1
                if on_done:
                    on_done(1)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - start
    return LoadResult(len(latencies) + errors, errors, wall, latencies)


class BackgroundLoad:
    """Paced load through `url` on a few threads until `stop()`, bounded in time and count.

    For rollouts on the local fleet (the demo, tests, `rollout start --load-rps`): real traffic for
    the judge to see. Requests go at about `rps` in total (None: as fast as the server answers).
    """

    def __init__(
        self,
        url: str,
        model: ModelSpec,
        rps: float | None,
        *,
        concurrency: int = 4,
        max_seconds: float = 1800.0,
        max_requests: int = 5_000_000,
    ) -> None:
        self.url = url
        self.model = model
        self.interval_s = 1.0 / rps if rps else 0.0
        self.concurrency = concurrency
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.sent = 0
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next_at = 0.0
        self._threads: list[threading.Thread] = []

    def start(self) -> BackgroundLoad:
        self._deadline = time.monotonic() + self.max_seconds
        self._next_at = time.monotonic()
        self._threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.concurrency)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> tuple[int, int]:
        """Stop and wait for the workers; (requests sent, errors)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=35)
        return self.sent, self.errors

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ticket(self) -> float | None:
        """When this worker may send its next request, or None when the load is over."""
        with self._lock:
            if self._stop.is_set() or self.sent >= self.max_requests or time.monotonic() > self._deadline:
                return None
            self.sent += 1
            at = max(self._next_at, time.monotonic() - 1.0)  # no burst to catch up after a stall
            self._next_at = at + self.interval_s
            return at

    def _worker(self) -> None:
        inputs = example_inputs(self.model)
        with triton_http.InferenceServerClient(self.url.removeprefix("http://"), network_timeout=30) as c:
            while (at := self._ticket()) is not None:
                if (wait := at - time.monotonic()) > 0 and self._stop.wait(wait):
                    return
                try:
                    c.infer(self.model.name, inputs)
                except Exception:  # noqa: BLE001 - a failed request is counted, the load goes on
                    with self._lock:
                        self.errors += 1
