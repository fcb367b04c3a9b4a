"""The shutdown's step log names the step a slow exit waits in, while it waits and at the end."""

from __future__ import annotations

import asyncio
import logging

import pytest

from signaling.shutdown_steps import ShutdownSteps


async def test_a_slow_step_is_named_while_it_runs_and_in_the_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="signaling.shutdown_steps")
    steps = ShutdownSteps(slow=0.1)
    steps.begin("quick")
    steps.next(then="stuck")
    await asyncio.sleep(0.25)
    still = [r.getMessage() for r in caplog.records if "still in step" in r.getMessage()]
    assert still and all("'stuck'" in message for message in still), still
    steps.next(then="last")
    steps.next()
    steps.finish()
    summary = caplog.records[-1].getMessage()
    assert summary.startswith("stopped in ") and "stuck 0.2" in summary and "quick" not in summary, summary
    count = len(caplog.records)
    await asyncio.sleep(0.25)
    assert len(caplog.records) == count  # nothing more once finished
