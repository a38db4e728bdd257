"""WAL positions: PostgreSQL writes them as ``X/Y`` (two hex halves of a 64-bit number)."""

from __future__ import annotations


def parse_lsn(text: str | None) -> int | None:
    """``'0/3000060'`` -> 50331744; None or an empty string -> None; garbage raises ValueError."""
    if text is None or text == "":
        return None
    hi, sep, lo = text.strip().partition("/")
    if not sep or not hi or not lo:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(value: int) -> str:
    """50331744 -> ``'0/3000060'`` (the form pg_lsn prints)."""
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"LSN out of range: {value}")
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def timeline_of_walfile(name: str) -> int:
    """The timeline of a WAL segment file name (its first 8 hex digits)."""
    return int(name[:8], 16)

