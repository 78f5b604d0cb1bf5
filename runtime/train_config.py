"""The settings of training a derived network: `train:` blocks and `nasc train` options.

Apart from runtime/train.py (which needs torch) so that `nasc check` and `nasc compile` can check a
space's `train:` values at their lines without importing torch, as they check its `search:` values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from nasc.compiler.expr import CallValue
from nasc.errors import SearchError, SourceSpan
from nasc.runtime.config import (absolute_dir, build_config, fraction, from_space, non_negative, positive,
                                 raise_in_file_order, refuse_unread_min_override, seed_value, setting_errors)
from nasc.runtime.schedules import check_known as check_schedule_known, check_weight_options


@attrs.frozen(kw_only=True)
class TrainConfig:
    epochs: int = 600
    batch: int = 96
    lr: float = attrs.field(default=0.025, validator=positive)
    momentum: float = attrs.field(default=0.9, validator=non_negative)
    weight_decay: float = attrs.field(default=3e-4, validator=non_negative)
    nesterov: bool = False
    schedule: str = "cosine"
    lr_min: float = attrs.field(default=0.0, validator=non_negative)
    schedule_exponent: float = attrs.field(default=2.0, validator=positive)
    warmup: int = attrs.field(default=0, validator=non_negative)
    schedule_gamma: float = 0.97  # step: the factor ...
    schedule_every: int = 1  # ... applied every this many epochs
    clip: float = attrs.field(default=5.0, validator=non_negative)  # 0: no clipping
    drop_path: float = 0.0
    cutout: int = attrs.field(default=0, validator=non_negative)
    aux_weight: float = attrs.field(default=0.0, validator=non_negative)
    label_smoothing: float = attrs.field(default=0.0, validator=fraction)
    bn_weight_decay: bool = True  # false: batch norms' weights and biases undecayed (ProxylessNAS' no_decay_keys)
    seed: int = attrs.field(default=0, validator=seed_value)
    deterministic: bool = True
    channels_last: bool = True  # NHWC tensors, as in search: faster on a GPU and on a CPU
    dataset: str = "digits"
    data_dir: str | None = attrs.field(default=None, converter=absolute_dir)
    device: str = "auto"

    def __attrs_post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1:  # lr: its validator (positive and finite)
            raise SearchError("epochs and batch must be positive")
        check_schedule_known(self.schedule)
        for name in ("channels_last", "bn_weight_decay"):
            if getattr(self, name) not in (True, False):
                raise SearchError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.schedule_gamma <= 0 or self.schedule_every < 1:
            raise SearchError(f"step(): gamma must be positive and every at least 1, got gamma = "
                              f"{self.schedule_gamma}, every = {self.schedule_every}")
        check_weight_options(self)
        if not 0 <= self.drop_path < 1:
            raise SearchError(f"drop_path must lie in [0, 1), got {self.drop_path}")


FIELDS = tuple(f.name for f in attrs.fields(TrainConfig))


def train_config(settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> TrainConfig:
    """A `train:` block (optimiser and schedule calls read as in search settings), then overrides."""
    values = {k: v for k, v in from_space(settings).items() if k in FIELDS}
    values.update({k: v for k, v in settings.items() if k in FIELDS and not isinstance(v, CallValue)})
    config = build_config(TrainConfig, values, overrides, "training")
    refuse_unread_min_override(config, overrides)
    return config


def check_train_block(settings: Mapping[str, Any], spans: Mapping[str, SourceSpan | None]) -> None:
    """A space's `train:` values, each at its own line, as `check_search_block` does for `search:`.

    `settings` holds the training settings only (not the space parameters a `train:` block may set).
    """
    raise_in_file_order(setting_errors(settings, spans, lambda values: train_config(values, {})))
