"""DARTS (Liu et al., ICLR 2019): every candidate runs; the edge is their softmax(α)-weighted sum.

The base class implements exactly this; the plugin adds sharpDARTS' Max-W
weighting (Hundt et al. 2019, `--weighting_algorithm max_w`): each op is
weighted 1 − max_k w_k + w_o instead of w_o, so the strongest op always has
weight 1 and the others follow it at a distance. Selection still reads
softmax(α).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


from nasc.errors import BuildError
from nasc.runtime.relaxations.base import RELAXATIONS, GroupWeights, Relaxation, masked_softmax


@RELAXATIONS.register("softmax")
class Softmax(Relaxation):
    """DARTS: Σ_o softmax(α)_o · o(x) over all candidates of an edge (or sharpDARTS' Max-W weights)."""

    name = "softmax"
    graph_safe = True  # nothing is drawn per step: runtime/step.py may capture the step as a CUDA graph
    defaults: dict[str, Any] = {"weighting": "scalar"}
    presets = {
        "darts": ({}, {}),
        # sharpDARTS README: batch 48, 120 epochs, cosine power annealing 0.025 -> 1e-4 (exponent 2, warm-up 5),
        # --cutout (length 16; its --autoaugment has no nasc counterpart)
        "sharpdarts": ({"weighting": "max_w"}, {"batch": 48, "epochs": 120, "schedule": "cosine_power",
                                                "lr_min": 1e-4, "schedule_exponent": 2.0, "warmup": 5, "cutout": 16}),
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        if self.options["weighting"] not in ("scalar", "max_w"):
            raise BuildError(f"softmax weighting must be \"scalar\" or \"max_w\", got {self.options['weighting']!r}")

    def group_weights(self, alpha, mask, extras, node_of_row) -> GroupWeights:
        w = masked_softmax(alpha, mask)  # (rows, cols)
        if self.options["weighting"] == "max_w":
            w = (1 - w.max(dim=-1, keepdim=True).values + w) * mask  # padded columns stay exactly 0
        return GroupWeights(w)
