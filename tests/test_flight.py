from __future__ import annotations

import asyncio

import pytest

from scrapy_gdpr._flight import Flight
from tests.utils import coroutine_test


@coroutine_test
async def test_concurrent_callers_share_one_run_and_errors_release_them():
    flight = Flight()
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)

    await asyncio.gather(*(flight.run(work) for _ in range(10)))
    assert runs == 1 and not flight.busy
    await flight.run(work)  # a later call runs again
    assert runs == 2

    async def broken() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("boom")

    results = await asyncio.gather(flight.run(broken), flight.run(work), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None  # the waiter is released
    assert runs == 2 and not flight.busy
    with pytest.raises(RuntimeError):
        await flight.run(broken)
