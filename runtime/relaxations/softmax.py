"""DARTS (Liu et al., ICLR 2019): every candidate runs; the edge is their softmax(α)-weighted sum.

The base class already implements exactly this, so the plugin only names it;
it is the reference every other relaxation is compared against.
"""

from __future__ import annotations

from nasc.runtime.relaxations.base import RELAXATIONS, Relaxation


@RELAXATIONS.register("softmax")
class Softmax(Relaxation):
    """DARTS: Σ_o softmax(α)_o · o(x) over all candidates of an edge."""

    name = "softmax"
    defaults: dict = {}
    presets = {"darts": ({}, {})}
