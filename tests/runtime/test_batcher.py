"""The dynamic batcher over a real backend (PyTorch, msmlp_micro with contributing weights).

Every loop is bounded in count and every wait in time; nothing here touches the network.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch

from msmlp.errors import InputError, OverloadedError
from msmlp.runtime.base import Backend, BackendInfo
from msmlp.runtime.batcher import BatchCounter, BatcherClosedError, DynamicBatcher
from msmlp.runtime.torch_backend import TorchBackend

MODEL = "msmlp_micro"
SHAPE = (3, 64, 64)
WAIT_S = 60


class Wrapped(Backend):
    """A real backend with a hook before each call: records batches, can block or raise."""

    name = "wrapped"

    def __init__(self, inner: Backend, hook=None, batch_range: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.inner, self.hook, self.narrow_to = inner, hook, batch_range
        self.calls: list[np.ndarray] = []
        self.entered = threading.Event()

    def _load(self) -> BackendInfo:
        info = replace(self.inner.load().info, backend=self.name)
        return replace(info, batch_range=self.narrow_to) if self.narrow_to else info

    def _infer(self, feed):
        x = feed[self.input_name]
        self.calls.append(x.copy())
        self.entered.set()
        if self.hook is not None:
            self.hook(x)
        return self.inner.infer(feed)


@pytest.fixture(scope="module")
def torch_backend(contributing):
    # One intra-op thread: 64 client threads plus an OpenMP team on 2 shared cores only adds contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TorchBackend(contributing(MODEL)).load()
    torch.set_num_threads(threads)


def inputs(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *SHAPE), dtype=np.float32)


def unbatched(backend: Backend, x: np.ndarray) -> np.ndarray:
    return np.concatenate([backend(x[i : i + 1]) for i in range(len(x))])


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    # Batched and single-image GEMMs sum in different orders: agree to float32 rounding, not bit for bit.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def gated(torch_backend: Backend) -> tuple[Wrapped, threading.Event]:
    gate = threading.Event()
    return Wrapped(torch_backend, hook=lambda x: gate.wait(WAIT_S)), gate


def test_64_concurrent_clients_each_get_their_own_unbatched_result(torch_backend):
    x = inputs(128)
    want = unbatched(torch_backend, x)
    counter = BatchCounter()
    done: Counter[int] = Counter()

    def client(i: int) -> list[np.ndarray]:
        # client i sends image 2i alone, then images 2i, 2i+1 as a small batch
        futures = [batcher.submit(x[2 * i]), batcher.submit(x[2 * i : 2 * i + 2])]
        for k, f in enumerate(futures):
            f.add_done_callback(lambda _f, key=2 * i + k: done.update([key]))
        return [f.result(WAIT_S) for f in futures]

    batcher = DynamicBatcher(torch_backend, max_batch=8, max_delay_ms=5, observers=[counter])
    with batcher, ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(client, range(64)))
    for i, (single, pair) in enumerate(answers):
        assert single.shape == (1000,) and pair.shape == (2, 1000)
        assert_close(single, want[2 * i])
        assert_close(pair, want[2 * i : 2 * i + 2])
    assert done == Counter(range(128)), "every request is answered exactly once"
    assert counter.requests == 128 and counter.images == 192 and counter.failed_batches == 0
    assert max(counter.sizes) <= 8
    assert counter.batches < 128, f"requests were not merged: {counter.sizes}"


def test_full_queue_raises_overloaded_then_recovers(torch_backend):
    backend, gate = gated(torch_backend)
    x = inputs(6, seed=1)
    with DynamicBatcher(backend, max_batch=2, max_delay_ms=0, max_queue=4) as batcher:
        first = batcher.submit(x[0])
        assert backend.entered.wait(WAIT_S)  # the worker holds image 0 in the backend
        queued = [batcher.submit(x[i]) for i in range(1, 5)]
        with pytest.raises(OverloadedError, match=r"queue is full: 4 images waiting, max_queue=4"):
            batcher.submit(x[5])
        assert batcher.queue_depth == 4
        gate.set()
        results = [f.result(WAIT_S) for f in [first, *queued]]
        assert_close(np.stack(results), unbatched(torch_backend, x[:5]))
        batcher.submit(x[5]).result(WAIT_S)  # room again


POISON = 1.0e4


def test_a_failing_batch_fails_only_its_own_requests(torch_backend):
    x = inputs(64, seed=2)
    x[:, 0, 0, 1] = np.arange(64)  # each image carries its id
    want = unbatched(torch_backend, x)
    poisoned = {3, 30, 57}  # these make their whole batch (at most 8 images each) fail
    x[sorted(poisoned), 0, 0, 0] = POISON
    outcome: dict[str, list[set[int]]] = {"failed": [], "ok": []}

    def hook(batch: np.ndarray) -> None:
        ids = {int(v) for v in batch[:, 0, 0, 1]}
        if (batch[:, 0, 0, 0] == POISON).any():
            outcome["failed"].append(ids)
            raise RuntimeError(f"poisoned batch {sorted(ids)}")
        outcome["ok"].append(ids)

    with DynamicBatcher(Wrapped(torch_backend, hook), max_batch=8, max_delay_ms=5) as batcher:
        with ThreadPoolExecutor(64) as pool:
            futures = list(pool.map(batcher.submit, x))
        errors = {i: f.exception(WAIT_S) for i, f in enumerate(futures)}
        survivor = inputs(1, seed=7)
        survivor[0, 0, 0, 1] = 99
        assert_close(
            batcher.submit(survivor[0]).result(WAIT_S), torch_backend(survivor)[0]
        )  # worker survived
    outcome["ok"].pop()
    failed = set().union(*outcome["failed"])
    assert failed >= poisoned
    assert {i for i, e in errors.items() if e is not None} == failed
    assert all(isinstance(errors[i], RuntimeError) and "poisoned batch" in str(errors[i]) for i in failed)
    assert len(failed) <= 24 and set().union(*outcome["ok"]) == set(range(64)) - failed
    for i in set(range(64)) - failed:
        assert_close(futures[i].result(), want[i])


@pytest.mark.parametrize("drain", [True, False])
def test_close_drains_or_fails_queued_requests(torch_backend, drain):
    backend, gate = gated(torch_backend)
    x = inputs(4, seed=3)
    batcher = DynamicBatcher(backend, max_batch=1, max_delay_ms=0).start()
    futures = [batcher.submit(x[0])]
    assert backend.entered.wait(WAIT_S)
    futures += [batcher.submit(x[i]) for i in range(1, 4)]
    closer = threading.Thread(target=batcher.close, kwargs={"drain": drain, "timeout_s": WAIT_S})
    closer.start()
    for _ in range(200):  # bounded: wait until close() has stopped intake
        if not batcher.running:
            break
        threading.Event().wait(0.01)
    with pytest.raises(BatcherClosedError):
        batcher.submit(x[0])
    gate.set()
    closer.join(WAIT_S)
    assert not closer.is_alive()
    assert_close(futures[0].result(WAIT_S), unbatched(torch_backend, x[:1])[0])
    if drain:
        assert_close(np.stack([f.result(WAIT_S) for f in futures[1:]]), unbatched(torch_backend, x[1:]))
    else:
        for f in futures[1:]:
            with pytest.raises(BatcherClosedError, match="closed before this request ran"):
                f.result(WAIT_S)
    assert len(backend.calls) == (4 if drain else 1)
    assert torch_backend.loaded, "a backend the batcher did not load is left loaded"


def test_asyncio_callers_and_timeouts(torch_backend):
    x = inputs(32, seed=4)
    want = unbatched(torch_backend, x)

    async def main() -> list[np.ndarray]:
        with DynamicBatcher(torch_backend, max_batch=8, max_delay_ms=5) as batcher:
            return await asyncio.gather(*(batcher.infer_async(xi, timeout_s=WAIT_S) for xi in x))

    assert_close(np.stack(asyncio.run(main())), want)

    backend, gate = gated(torch_backend)

    async def timed_out() -> None:
        with DynamicBatcher(backend, max_batch=1, max_delay_ms=0) as batcher:
            blocker = batcher.submit(x[0])
            assert backend.entered.wait(WAIT_S)
            with pytest.raises(TimeoutError):
                await batcher.infer_async(x[1], timeout_s=0.05)
            gate.set()
            blocker.result(WAIT_S)

    asyncio.run(timed_out())
    assert len(backend.calls) == 1, "a request withdrawn by its caller's timeout is never run"


def test_bad_requests_and_settings_are_refused(torch_backend):
    with DynamicBatcher(torch_backend, max_batch=4) as batcher:
        with pytest.raises(InputError, match=r"input shape \(3, 32, 32\) does not match"):
            batcher.submit(np.zeros((3, 32, 32), np.float32))
        with pytest.raises(InputError, match=r"request of 5 images does not fit .*max_batch=4"):
            batcher.submit(inputs(5))
    with pytest.raises(BatcherClosedError, match="not running"):
        DynamicBatcher(torch_backend).submit(inputs(1)[0])
    with pytest.raises(InputError, match="max_queue must be >= max_batch"):
        DynamicBatcher(torch_backend, max_batch=8, max_queue=4)
    narrow = Wrapped(torch_backend, batch_range=(1, 4))
    with pytest.raises(InputError, match=r"max_batch=8 exceeds the backend's largest batch 4"):
        DynamicBatcher(narrow, max_batch=8).start()


def test_observer_errors_do_not_stop_the_worker(torch_backend):
    def broken(stats) -> None:
        raise ValueError("observer bug")

    x = inputs(2, seed=5)
    with DynamicBatcher(torch_backend, observers=[broken]) as batcher:
        got = [batcher.submit(xi).result(WAIT_S) for xi in x]
    assert_close(np.stack(got), unbatched(torch_backend, x))
