from __future__ import annotations

import asyncio
import importlib.util

import pytest

from rtdp import eventloop
from rtdp.errors import ConfigError


async def _loop_class() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_prefers_uvloop_where_installed() -> None:
    installed = importlib.util.find_spec("uvloop") is not None
    assert eventloop.resolve("auto") == ("uvloop" if installed else "asyncio")


def test_each_choice_runs_on_its_loop() -> None:
    pytest.importorskip("uvloop")
    assert eventloop.run(_loop_class(), "uvloop").startswith("uvloop")
    assert eventloop.run(_loop_class(), "asyncio").startswith("asyncio")


def test_uvloop_asked_for_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert eventloop.resolve("auto") == "asyncio"
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        eventloop.resolve("uvloop")
