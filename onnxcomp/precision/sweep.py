"""The measured-sensitivity sweep as independent tasks: in this process, a local process pool, or a Ray cluster.

A task is one unit's quantized weights, {initializer name: array}; its result is the model's output
error with those fed instead of the float weights (`OverrideRunner`, one per worker, built once from
the serialized model and the held-out feeds). Every executor runs the same ONNX Runtime computation,
so the errors — and the plan chosen from them — are the same wherever the tasks run.

- `workers=1`, no address: in this process (the default).
- `workers=N`: a local pool of N processes (spawned: ONNX Runtime's threads do not survive a fork).
- `ray="host:port"`: N actors (at least 1) on the Ray cluster there (`onnxcomp[distributed]`). The
  address is checked with a plain TCP connection first, so an unreachable one fails in seconds.
"""

import multiprocessing
import socket
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError
from onnxcomp.extras import require
from onnxcomp.precision.measure import OverrideRunner, output_metric

CONNECT_TIMEOUT_S = 5.0


def check_ray_address(address: str) -> tuple[str, int]:
    """'host:port' that answers a TCP connection within CONNECT_TIMEOUT_S, else one error line."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise OnnxcompError(f"--ray {address!r}: expected HOST:PORT of a Ray head (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise OnnxcompError(f"--ray {address}: no Ray head answers there ({reason})") from None
    return host, int(port)


class _Worker:
    """An OverrideRunner built from a model file: the state each process or actor keeps."""

    def __init__(self, model_path: str, names: list[str], feeds: list[dict]):
        model = ir.serde.deserialize_model(onnx.load(model_path))
        self.runner = OverrideRunner(model, names, feeds)

    def error(self, overrides: dict[str, np.ndarray]) -> float:
        return self.runner.error(overrides)


_process_worker: _Worker | None = None


def _start_process(model_path: str, names: list[str], feeds: list[dict]) -> None:
    global _process_worker
    _process_worker = _Worker(model_path, names, feeds)


def _process_error(overrides: dict[str, np.ndarray]) -> float:
    return _process_worker.error(overrides)


class Sweep:
    """`errors(tasks)` → one error per task, in order; `metric` names the error."""

    def __init__(self, model: ir.Model, names: list[str], feeds: list[dict], workers: int = 1, ray: str = ""):
        self.workers, self.address = workers, ray
        in_process = not ray and workers <= 1
        self.local = OverrideRunner(model, names, feeds) if in_process else None  # workers build their own
        self.metric = output_metric([value.name for value in model.graph.outputs])
        self.where = f"Ray cluster {ray}" if ray else (f"{workers} processes" if workers > 1 else "this process")
        if ray:
            check_ray_address(ray)
        self.model, self.names, self.feeds = model, names, feeds

    def errors(self, tasks: Iterable[dict[str, np.ndarray]]) -> Iterator[float]:
        """Errors in task order; tasks are taken as workers free up (at most 2 per worker in flight)."""
        if self.local is not None:
            yield from (self.local.error(task) for task in tasks)
            return
        with tempfile.TemporaryDirectory(prefix="onnxcomp-sweep-") as folder:
            path = str(Path(folder) / "model.onnx")
            onnx.save(ir.to_proto(self.model), path)
            if self.address:
                yield from self._ray(path, tasks)
            else:
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(
                    self.workers, context, initializer=_start_process, initargs=(path, self.names, self.feeds)
                ) as pool:
                    pending: deque = deque()
                    for task in tasks:
                        pending.append(pool.submit(_process_error, task))
                        if len(pending) >= 2 * self.workers:
                            yield pending.popleft().result()
                    while pending:
                        yield pending.popleft().result()

    def _ray(self, path: str, tasks: Iterable[dict[str, np.ndarray]]) -> Iterator[float]:
        ray = require("ray", "distributed", "--ray")
        from ray.util import ActorPool

        ray.init(address=self.address, logging_level="ERROR", log_to_driver=False, ignore_reinit_error=True)
        try:
            model_ref = ray.put(Path(path).read_bytes())
            actor = ray.remote(num_cpus=1)(_RayWorker)
            actors = max(self.workers, 1)
            pool = ActorPool([actor.remote(model_ref, self.names, self.feeds) for _ in range(actors)])
            in_flight = 0
            for task in tasks:
                pool.submit(lambda worker, t: worker.error.remote(t), task)
                in_flight += 1
                if in_flight >= 2 * actors:
                    yield pool.get_next()
                    in_flight -= 1
            while pool.has_next():
                yield pool.get_next()
        finally:
            ray.shutdown()


class _RayWorker(_Worker):
    """A `_Worker` whose model arrives as bytes from Ray's object store."""

    def __init__(self, model_bytes: bytes, names: list[str], feeds: list[dict]):
        with tempfile.NamedTemporaryFile(suffix=".onnx") as fh:
            fh.write(model_bytes)
            fh.flush()
            super().__init__(fh.name, names, feeds)
