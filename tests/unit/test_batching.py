"""The dynamic batcher and the load-time execution profile.

Every test runs on ``FakeClockLoop``, an asyncio loop whose ``time()`` is a clock the test advances, and
gives the batcher that same clock: the batcher's real ``call_later`` timers (queue delay, deadlines) fire
exactly when a test moves time past them, and never on their own. Worker-thread executions are held by a
gate the test opens; their start is reported back to the loop. Nothing waits on real time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sluice.converters.artifact.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidInputError,
    NotReadyError,
    OverloadedError,
)
from sluice.server.execution.batching import Batcher
from sluice.server.execution.tuning import decide_execution
from sluice.server.settings import BatchingSettings

Tensors = dict[str, npt.NDArray[Any]]


class FakeClockLoop(asyncio.SelectorEventLoop):
    """An event loop on a fake monotonic clock: timers fire only once ``advance`` moves past them."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# Real time only as a safety net: a broken batcher fails its test instead of hanging the run.
WATCHDOG_S = 5.0


def run(test: Callable[[FakeClockLoop], Awaitable[None]]) -> None:
    """Run ``test`` on a fresh fake-clock loop; any error the loop reports (such as a future set twice
    inside a callback) fails the test, and so does a test still running after ``WATCHDOG_S``."""
    reported: list[dict[str, Any]] = []

    def make_loop() -> FakeClockLoop:
        loop = FakeClockLoop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        return loop

    async def guarded(loop: FakeClockLoop) -> None:
        task = asyncio.current_task()
        assert task is not None
        watchdog = threading.Timer(WATCHDOG_S, loop.call_soon_threadsafe, (task.cancel,))
        watchdog.start()
        try:
            await test(loop)
        finally:
            watchdog.cancel()

    with asyncio.Runner(loop_factory=make_loop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, FakeClockLoop)
        try:
            runner.run(guarded(loop))
        except asyncio.CancelledError:
            pytest.fail(f"still waiting after {WATCHDOG_S} s of real time: the batcher never answered")
    assert reported == []


async def tick(loop: FakeClockLoop) -> None:
    """Return once every timer due at the current fake time has run."""
    done: asyncio.Future[None] = loop.create_future()
    loop.call_at(loop.time(), done.set_result, None)
    await done


def rows_of(caller: int, rows: int) -> Tensors:
    """Inputs whose values say who sent them: row i of caller c is [c, i]."""
    return {"x": np.array([[caller, i] for i in range(rows)], dtype=np.int64)}


class FakeModel:
    """An ``execute`` that records each batch and, when gated, blocks its worker until the test allows it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, gated: bool = False) -> None:
        self.batches: list[list[int]] = []  # the caller id of every row, per execution
        self.started: asyncio.Queue[int] = asyncio.Queue()  # rows of each execution as it begins
        self.returned: asyncio.Queue[int] = asyncio.Queue()
        self.fail_next = False
        self.wrong_rows = False
        self._loop = loop
        self._gated = gated
        self._gate = threading.Semaphore(0)

    def execute(self, inputs: Tensors) -> Tensors:
        x = inputs["x"]
        self.batches.append([int(c) for c in x[:, 0]])
        self._loop.call_soon_threadsafe(self.started.put_nowait, len(x))
        try:
            # The timeout only keeps a broken test from hanging the run; no test relies on it.
            if self._gated and not self._gate.acquire(timeout=5):
                raise RuntimeError("the test never opened the gate")
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("model exploded")
            y = x[:, 0] * 1000 + x[:, 1]
            return {"y": y[:-1] if self.wrong_rows else y, "x2": x * 2}
        finally:
            self._loop.call_soon_threadsafe(self.returned.put_nowait, len(x))

    def open(self) -> None:
        self._gated = False
        self._gate.release(100)

    def step(self) -> None:
        """Let exactly one gated execution finish."""
        self._gate.release(1)


class Recorder:
    """A ``BatchObserver`` that keeps everything and lets a test wait for a queue depth."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.queue_s: list[list[float]] = []
        self.compute_s: list[float] = []
        self.shed: list[str] = []
        self.depths: list[int] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def on_batch(self, rows: int, requests: int, queue_s: list[float], compute_s: float) -> None:
        self.batches.append((rows, requests))
        self.queue_s.append(queue_s)
        self.compute_s.append(compute_s)

    def on_shed(self, reason: str) -> None:
        self.shed.append(reason)

    def on_queue(self, rows: int) -> None:
        self.depths.append(rows)
        for wanted, future in self._waiters:
            if wanted == rows and not future.done():
                future.set_result(None)

    async def queued(self, rows: int) -> None:
        """Wait until the queue depth becomes ``rows`` (at once if it is already)."""
        if self.depths and self.depths[-1] == rows:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((rows, future))
        await future


async def started(
    loop: FakeClockLoop, config: BatchingSettings, *, gated: bool = False, inline: bool = False
) -> tuple[Batcher, FakeModel, Recorder]:
    model = FakeModel(loop, gated=gated)
    recorder = Recorder()
    batcher = Batcher(model.execute, config, inline=inline, clock=loop.time, observer=recorder, name="m")
    await batcher.start()
    return batcher, model, recorder


def send(batcher: Batcher, caller: int, rows: int = 1, **kwargs: Any) -> asyncio.Task[Tensors]:
    return asyncio.create_task(batcher.infer(rows_of(caller, rows), rows, **kwargs))


def check(result: Tensors, caller: int, rows: int) -> None:
    assert result["y"].tolist() == [caller * 1000 + i for i in range(rows)]
    assert result["x2"].tolist() == [[caller * 2, i * 2] for i in range(rows)]


LONG_DELAY = BatchingSettings(max_batch_size=4, max_queue_delay_us=1_000_000)


# ----- batch formation ----------------------------------------------------------------------------------


def test_a_batch_leaves_at_max_batch_size_and_the_rest_waits_for_the_delay() -> None:
    async def body(loop: FakeClockLoop) -> None:
        batcher, model, recorder = await started(loop, LONG_DELAY)
        tasks = [send(batcher, caller) for caller in range(6)]
        for caller, task in enumerate(tasks[:4]):
            check(await task, caller, 1)
        assert batcher.queued_rows == 2 and batcher.in_flight == 0
        assert not tasks[4].done() and not tasks[5].done()
        loop.advance(1.001)
        for caller, task in enumerate(tasks[4:], start=4):
            check(await task, caller, 1)
        assert recorder.batches == [(4, 4), (2, 2)]
        assert model.batches == [[0, 1, 2, 3], [4, 5]]
        await batcher.stop()

    run(body)


def test_a_batch_leaves_at_a_preferred_size_without_waiting() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=8, max_queue_delay_us=1_000_000, preferred_batch_sizes=(3,))
        batcher, _, recorder = await started(loop, config)
        tasks = [send(batcher, caller) for caller in range(4)]
        for caller, task in enumerate(tasks[:3]):
            check(await task, caller, 1)
        assert batcher.queued_rows == 1 and not tasks[3].done()
        loop.advance(1.001)
        check(await tasks[3], 3, 1)
        assert recorder.batches == [(3, 3), (1, 1)]
        await batcher.stop()

    run(body)


def test_a_batch_leaves_when_the_oldest_request_has_waited_the_delay() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=8, max_queue_delay_us=1000)
        batcher, model, recorder = await started(loop, config, inline=True)
        first = send(batcher, 1)
        await recorder.queued(1)
        loop.advance(0.0004)
        second = send(batcher, 2, rows=2)
        await recorder.queued(3)
        loop.advance(0.0005)  # the oldest has waited 0.9 ms
        await tick(loop)
        assert model.batches == [] and batcher.queued_rows == 3
        loop.advance(0.0002)
        check(await first, 1, 1)
        check(await second, 2, 2)
        assert recorder.batches == [(3, 2)]
        assert recorder.queue_s[0] == pytest.approx([0.0011, 0.0007])
        await batcher.stop()

    run(body)


def test_with_zero_delay_requests_gather_while_the_instance_is_busy() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=16, max_queue_delay_us=0)
        batcher, model, recorder = await started(loop, config, gated=True)
        first = send(batcher, 1)
        assert await model.started.get() == 1
        later = [send(batcher, 2, rows=2), send(batcher, 3, rows=3), send(batcher, 4)]
        await recorder.queued(6)
        assert batcher.in_flight == 1 and model.batches == [[1]]
        model.open()
        check(await first, 1, 1)
        for task, (caller, rows) in zip(later, [(2, 2), (3, 3), (4, 1)], strict=True):
            check(await task, caller, rows)
        assert model.batches == [[1], [2, 2, 3, 3, 3, 4]]
        assert recorder.batches == [(1, 1), (6, 3)]
        await batcher.stop()

    run(body)


@pytest.mark.parametrize("inline", [False, True])
def test_mixed_row_counts_share_a_batch_and_each_caller_gets_exactly_its_rows(inline: bool) -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=32, max_queue_delay_us=0)
        batcher, model, _ = await started(loop, config, inline=inline)
        sizes = {10: 3, 11: 1, 12: 5, 13: 2}
        results = await asyncio.gather(*(send(batcher, c, rows=n) for c, n in sizes.items()))
        assert model.batches == [[c for c, n in sizes.items() for _ in range(n)]]
        for (caller, rows), result in zip(sizes.items(), results, strict=True):
            check(result, caller, rows)
            assert result["y"].base is not None  # a view of the batch output, not a copy
        await batcher.stop()

    run(body)


def test_a_request_larger_than_max_batch_size_runs_alone() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=4, max_queue_delay_us=0)
        batcher, model, _ = await started(loop, config, gated=True)
        first = send(batcher, 1)
        await model.started.get()
        small, big, last = send(batcher, 2, rows=2), send(batcher, 3, rows=6), send(batcher, 4)
        model.open()
        check(await first, 1, 1)
        check(await small, 2, 2)
        check(await big, 3, 6)
        check(await last, 4, 1)
        assert model.batches == [[1], [2, 2], [3] * 6, [4]]
        await batcher.stop()

    run(body)


def test_a_request_larger_than_the_whole_queue_is_admitted_into_an_empty_queue() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=2, max_queue_delay_us=0, max_queue_size=2)
        batcher, model, _ = await started(loop, config)
        check(await batcher.infer(rows_of(1, 5), 5), 1, 5)  # refusing it would be a 503 forever
        assert model.batches == [[1] * 5]
        await batcher.stop()

    run(body)


# ----- deadlines, disconnects, back-pressure --------------------------------------------------------------


def test_a_standing_queue_delay_sheds_newcomers_and_a_drained_queue_admits_again() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=1, max_queue_delay_us=0, max_queue_wait_ms=20)
        batcher, model, recorder = await started(loop, config, gated=True)
        tasks = [send(batcher, 1)]
        await model.started.get()
        tasks += [send(batcher, caller) for caller in (2, 3, 4)]
        await recorder.queued(3)
        loop.advance(0.030)
        model.step()  # 2 is taken having waited 30 ms, over the 20 ms target: the interval starts
        await model.started.get()
        assert batcher.overloaded() is None  # one late batch may be a burst draining: nothing shed
        loop.advance(0.150)
        model.step()  # 3 is taken still over the target a whole interval later: a standing queue
        await model.started.get()
        assert batcher.overloaded() == "queue_delay"
        with pytest.raises(OverloadedError) as shed:
            await batcher.infer(rows_of(6, 1), 1)
        assert shed.value.status == 503 and shed.value.details == {"reason": "queue_delay"}
        assert recorder.shed == ["queue_delay"]
        model.open()
        for caller, task in enumerate(tasks, start=1):
            check(await task, caller, 1)  # nobody already admitted is dropped
        assert batcher.overloaded() is None  # drained: admitted again
        check(await send(batcher, 7), 7, 1)
        await batcher.stop()

    run(body)


def test_an_expired_request_leaves_the_queue_on_its_timer_with_504_and_never_runs() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=4, max_queue_delay_us=0)
        batcher, model, recorder = await started(loop, config, gated=True)
        busy = send(batcher, 1)
        await model.started.get()
        doomed = send(batcher, 2, deadline=loop.time() + 0.010)
        await recorder.queued(1)
        loop.advance(0.011)  # nothing else happens: only the deadline timer can wake the batcher
        with pytest.raises(DeadlineExceededError) as error:
            await doomed
        assert error.value.status == 504 and batcher.in_flight == 1  # while the instance was busy
        assert batcher.queued_rows == 0 and recorder.shed == ["deadline"]
        model.open()
        check(await busy, 1, 1)
        check(await send(batcher, 3), 3, 1)
        assert model.batches == [[1], [3]]
        await batcher.stop()

    run(body)


def test_a_deadline_shorter_than_the_queue_delay_expires_before_the_batch_goes() -> None:
    async def body(loop: FakeClockLoop) -> None:
        batcher, model, recorder = await started(loop, LONG_DELAY, inline=True)
        doomed = send(batcher, 1, deadline=loop.time() + 0.010)
        kept = send(batcher, 2)
        await recorder.queued(2)
        loop.advance(0.011)
        with pytest.raises(DeadlineExceededError):
            await doomed
        assert batcher.queued_rows == 1
        loop.advance(1.0)
        check(await kept, 2, 1)
        assert model.batches == [[2]]
        with pytest.raises(DeadlineExceededError):  # already past: refused without queueing
            await batcher.infer(rows_of(3, 1), 1, deadline=loop.time())
        assert recorder.shed == ["deadline", "deadline"]
        await batcher.stop()

    run(body)


def test_a_cancelled_caller_leaves_the_queue_and_its_rows_stop_counting() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=4, max_queue_delay_us=0, max_queue_size=2)
        batcher, model, recorder = await started(loop, config, gated=True)
        busy = send(batcher, 1)
        await model.started.get()
        gone = send(batcher, 2, rows=2)
        await recorder.queued(2)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert batcher.queued_rows == 0 and recorder.shed == ["disconnected"]
        replacement = send(batcher, 3, rows=2)  # fits only because the cancelled rows were freed
        await recorder.queued(2)
        model.open()
        check(await busy, 1, 1)
        check(await replacement, 3, 2)
        assert model.batches == [[1], [3, 3]]
        await batcher.stop()

    run(body)


def test_a_full_queue_refuses_at_once_with_503_and_leaves_the_queue_unchanged() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=8, max_queue_delay_us=0, max_queue_size=4)
        batcher, model, recorder = await started(loop, config, gated=True)
        busy = send(batcher, 1)
        await model.started.get()
        waiting = send(batcher, 2, rows=3)
        await recorder.queued(3)
        refused = batcher.infer(rows_of(3, 2), 2)
        with pytest.raises(OverloadedError) as error:
            refused.send(None)  # raises on its first step: it never waited for anything
        assert error.value.status == 503 and error.value.retry_after_s == 1
        assert batcher.queued_rows == 3 and recorder.shed == ["queue_full"]
        fits = send(batcher, 4)  # 3 + 1 rows still fit
        await recorder.queued(4)
        model.open()
        check(await busy, 1, 1)
        check(await waiting, 2, 3)
        check(await fits, 4, 1)
        await batcher.stop()

    run(body)


def test_high_priority_requests_are_taken_first() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=2, max_queue_delay_us=0)
        batcher, model, recorder = await started(loop, config, gated=True)
        busy = send(batcher, 1)
        await model.started.get()
        tasks = [
            send(batcher, 10),
            send(batcher, 11, priority=0),
            send(batcher, 12, priority=1),
            send(batcher, 13, priority=2),  # anything but 1 is normal
        ]
        await recorder.queued(4)
        model.open()
        await asyncio.gather(busy, *tasks)
        assert model.batches == [[1], [12, 10], [11, 13]]
        await batcher.stop()

    run(body)


# ----- failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("inline", [False, True])
def test_a_failing_batch_fails_each_of_its_requests_once_and_the_batcher_goes_on(inline: bool) -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=8, max_queue_delay_us=0)
        batcher, model, recorder = await started(loop, config, inline=inline)
        model.fail_next = True
        outcomes = await asyncio.gather(*(send(batcher, c) for c in range(3)), return_exceptions=True)
        assert all(isinstance(e, InternalError) and e.status == 500 for e in outcomes)
        assert all(isinstance(e.__cause__, RuntimeError) for e in outcomes)
        assert len({id(e) for e in outcomes}) == 3  # one exception per caller, not a shared one
        check(await send(batcher, 7), 7, 1)
        assert recorder.batches == [(1, 1)]  # only successful batches are reported
        await batcher.stop()

    run(body)  # a future set twice would surface here as an error reported by the loop


def test_an_output_without_the_batch_rows_fails_the_batch_naming_the_output() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=8, max_queue_delay_us=0)
        batcher, model, _ = await started(loop, config)
        model.wrong_rows = True
        with pytest.raises(InternalError, match="'y'") as error:
            await batcher.infer(rows_of(1, 2), 2)
        assert error.value.details == {"output": "y"}
        await batcher.stop()

    run(body)


def test_inputs_whose_rows_disagree_with_rows_are_refused_before_queueing() -> None:
    async def body(loop: FakeClockLoop) -> None:
        batcher, _, _ = await started(loop, LONG_DELAY)
        with pytest.raises(InvalidInputError, match="'x'"):
            await batcher.infer(rows_of(1, 3), 2)
        assert batcher.queued_rows == 0
        await batcher.stop()

    run(body)


# ----- lifecycle and observation -----------------------------------------------------------------------


def test_stop_drains_queued_work_then_refuses_new_requests() -> None:
    async def body(loop: FakeClockLoop) -> None:
        batcher, _, recorder = await started(loop, LONG_DELAY)
        tasks = [send(batcher, 1), send(batcher, 2, rows=2)]
        await recorder.queued(3)
        await batcher.stop()  # drains without waiting for the (fake) 1 s delay
        check(await tasks[0], 1, 1)
        check(await tasks[1], 2, 2)
        with pytest.raises(NotReadyError) as error:
            await batcher.infer(rows_of(3, 1), 1)
        assert error.value.status == 503
        assert recorder.shed == []

    run(body)


def test_stop_fails_what_is_left_at_the_drain_timeout() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=1, max_queue_delay_us=0)
        batcher, model, recorder = await started(loop, config, gated=True)
        executing, queued = send(batcher, 1), send(batcher, 2)
        await model.started.get()
        await recorder.queued(1)
        stopping = asyncio.create_task(batcher.stop(drain_timeout_s=2.0))
        await tick(loop)
        assert not stopping.done()
        loop.advance(2.1)
        await stopping
        for task in (executing, queued):
            with pytest.raises(NotReadyError, match="shutting down"):
                await task
        assert recorder.shed == ["shutdown", "shutdown"] and batcher.queued_rows == 0
        model.open()
        await model.returned.get()  # the abandoned execution ends; its result goes nowhere
        assert model.batches == [[1]]

    run(body)


def test_infer_before_start_is_not_ready() -> None:
    async def body(loop: FakeClockLoop) -> None:
        batcher = Batcher(lambda inputs: inputs, LONG_DELAY, clock=loop.time)
        with pytest.raises(NotReadyError, match="not started"):
            await batcher.infer(rows_of(1, 1), 1)

    run(body)


def test_the_observer_sees_queue_depths_and_batches() -> None:
    async def body(loop: FakeClockLoop) -> None:
        config = BatchingSettings(max_batch_size=8, max_queue_delay_us=0)
        batcher, _, recorder = await started(loop, config, inline=True)
        await asyncio.gather(send(batcher, 1, rows=2), send(batcher, 2, rows=3))
        assert recorder.depths == [2, 5, 0]
        assert recorder.batches == [(5, 2)]
        assert recorder.queue_s == [[0.0, 0.0]] and recorder.compute_s == [0.0]  # the clock stood still
        await batcher.stop()

    run(body)


def test_config_is_validated_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchingSettings(max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue_delay_us"):
        BatchingSettings(max_queue_delay_us=-1)
    with pytest.raises(ValueError, match="instances"):
        BatchingSettings(instances=True)
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        BatchingSettings(max_batch_size=8, preferred_batch_sizes=(4, 16))
    assert BatchingSettings(preferred_batch_sizes=[32, 8]).preferred_batch_sizes == (8, 32)  # type: ignore[arg-type]


# ----- decide_execution ----------------------------------------------------------------------------------


def busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_decide_execution_runs_a_cheap_model_inline() -> None:
    plan = decide_execution(lambda inputs: inputs, lambda rows: rows_of(0, rows), sizes=(1, 8, 32))
    assert plan.inline
    assert plan.preferred_batch_sizes == [32]  # a fixed per-call cost: every bigger batch is cheaper per row
    assert set(plan.per_row_us) == {1, 8, 32} and plan.hop_us > 0
    assert plan.to_json()["execution"] == "inline"


def test_decide_execution_runs_an_expensive_model_on_threads() -> None:
    # 2 ms per row: a whole call dwarfs a thread hop, and batching does not lower the per-row cost.
    plan = decide_execution(
        lambda inputs: busy_wait(0.002 * len(inputs["x"])), lambda r: rows_of(0, r), sizes=(1, 2)
    )
    assert not plan.inline
    assert plan.preferred_batch_sizes == [1]
    assert plan.to_json()["per_row_us"].keys() == {"1", "2"}
