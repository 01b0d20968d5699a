"""rtdp: the shortest path from a number on a device to a live graph in a browser."""

from __future__ import annotations

__version__ = "0.1.0"
