"""The one bound on what the hot path's caches keep.

Translation caches what repeats from request to request (one visitor's id and forwarding walk, one page's query
redaction, one browser's client hints, quoted values). Their keys are texts the visitors send, so each cache is
bounded in entries *and* takes only texts up to :data:`CACHED_LENGTH` characters: a longer value is computed
every time, and what visitors send can never make a cache big.
"""

from __future__ import annotations

__all__ = ["CACHED_LENGTH"]

CACHED_LENGTH = 512
