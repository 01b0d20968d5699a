"""The emulator's switches and source list in rtdp (what the viewer's /tools page and the emulator share)."""

from __future__ import annotations

import peewee as pw
import pytest

from emulator.sources import SOURCES as BUILDERS
from emulator.sources import Source
from rtdp import emulation as state
from rtdp.errors import NotFound
from rtdp.models import EmulatorState


def test_first_load_creates_an_enabled_row(any_db: pw.Database) -> None:
    status = state.load("sine")
    assert (status.source, status.enabled, status.state) == ("sine", True, {})
    assert EmulatorState.get_by_id("sine").enabled


def test_position_round_trips_without_touching_the_switch(any_db: pw.Database) -> None:
    state.set_enabled("sine", False)
    state.save_position("sine", {"t": 1.25})
    status = state.load("sine")
    assert status.state == {"t": 1.25}
    assert status.enabled is False


def test_set_enabled_persists_and_is_what_the_runner_reads(any_db: pw.Database) -> None:
    assert state.enabled_sources(["sine", "door"]) == {"sine", "door"}  # no rows yet: on
    state.set_enabled("door", False)
    assert state.enabled_sources(["sine", "door"]) == {"sine"}
    state.set_enabled("door", True)
    state.set_enabled("sine", False)
    assert state.enabled_sources(["sine", "door"]) == {"door"}
    assert {s.source: s.enabled for s in state.statuses()}["sine"] is False


def test_damaged_state_restarts_from_defaults(any_db: pw.Database) -> None:
    EmulatorState.create(source="random_walk", enabled=True, state="{not json")
    assert state.load("random_walk").state == {}


def test_unknown_source_is_refused(any_db: pw.Database) -> None:
    with pytest.raises(NotFound, match="unknown emulator source 'nope'"):
        state.set_enabled("nope", True)


def test_the_emulator_builds_exactly_the_sources_and_feeds_listed_here() -> None:
    assert sorted(BUILDERS) == sorted(state.SOURCES)
    assert all(BUILDERS[name].name == name for name in state.SOURCES)
    for name, feed in state.source_feeds().items():
        if feed is not None:
            assert BUILDERS[name]().feed == feed, name
    assert state.source_feeds()["sine"] == "sin_wave_over_time_in_seconds"


def test_an_implementation_of_no_listed_source_is_refused_when_defined() -> None:
    with pytest.raises(NotFound, match="unknown emulator source 'bogus'"):

        class Bogus(Source):
            name = "bogus"

    assert "bogus" not in BUILDERS
