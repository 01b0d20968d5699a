"""Simulated devices (sine wave, door, X10 switch, random walk, this machine's load) publishing as a device would."""

from __future__ import annotations

from emulator.runner import Emulator, available_sources, run
from emulator.sources import SOURCES, Reading, Source
from rtdp.emulation import set_enabled, statuses

__all__ = ["SOURCES", "Emulator", "Reading", "Source", "available_sources", "run", "set_enabled", "statuses"]
