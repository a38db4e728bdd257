"""The pure decision core: decide(view, local, config, now) -> Decision."""

from pgha.core.actions import Decision
from pgha.core.decide import decide

__all__ = ["Decision", "decide"]
