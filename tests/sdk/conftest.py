"""Fixtures the SDK's tests share."""

from __future__ import annotations

from collections.abc import Iterator

import bard_sdk
import pytest


@pytest.fixture
def engine(model: bard_sdk.Model) -> Iterator[bard_sdk.Engine]:
    """An engine over the tiny model, small enough that prompts span several prefill chunks."""
    with bard_sdk.Engine(model, max_active=8, prefill_chunk=16) as running:
        yield running
