"""The resolved settings of one search: the space's `search:` block, then CLI overrides.

Everything a run depends on lives here, so that the run directory's
`config.json` plus the space file reproduce the run.
"""

from __future__ import annotations

import functools
import math
import re
import types
import typing
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from nasc.compiler.expr import CallValue, Ramp
from nasc.compiler.settings import SEARCH_SETTINGS, TRAIN_SETTINGS
from nasc.errors import NascError, NasSemanticError, SearchError, SourceSpan, did_you_mean
from nasc.runtime.schedules import (HINT as SCHEDULE_HINT, SCHEDULES, check_known as check_schedule_known,
                                   check_weight_options, takes as schedule_takes)


def finite(instance, attribute, value) -> None:
    """NaN compares false both ways, so the range checks below let it (and inf) through to torch
    (Adam: "internal error: ValueError: Invalid learning rate: nan"; a GDAS step redrew its sample forever)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SearchError(f"{attribute.name} must be a finite number, got {value!r}")


def positive(instance, attribute, value) -> None:
    finite(instance, attribute, value)
    if value is None or value <= 0:
        raise SearchError(f"{attribute.name} must be positive, got {value!r}")


def absolute_dir(path: str | None) -> str | None:
    """A data directory as an absolute path: the run records it, and `nasc train RUN` or `--resume`
    from another folder must find the same data."""
    if not isinstance(path, (str, Path)):
        return path  # the type check reports it
    return str(Path(path).expanduser().resolve())


def non_negative(instance, attribute, value) -> None:
    finite(instance, attribute, value)
    if value is None or value < 0:
        raise SearchError(f"{attribute.name} must be ≥ 0, got {value!r}")


def seed_value(instance, attribute, value) -> None:
    """torch.manual_seed takes at most 64 bits, and the data and augmentation streams use seed + 1, + 2."""
    non_negative(instance, attribute, value)
    if value >= 2**63:
        raise SearchError(f"{attribute.name} must be below 2^63, got {value!r}")


def none_or_non_negative(instance, attribute, value) -> None:
    if value is not None:
        non_negative(instance, attribute, value)


def _betas(instance, attribute, value) -> None:
    if not all(0 <= b < 1 for b in value):
        raise SearchError(f"{attribute.name} must both lie in [0, 1), got {tuple(value)!r}")


def fraction(instance, attribute, value) -> None:
    if not 0 <= value < 1:
        raise SearchError(f"{attribute.name} must lie in [0, 1), got {value!r}")


def _portion(instance, attribute, value) -> None:
    if not 0 < value < 1:
        raise SearchError(f"train_portion must lie strictly between 0 and 1, got {value!r}")


def _stages(value: Any) -> tuple[dict[str, Any], ...]:
    """`stages` (progressive search): `[stage(keep = 8, layers = 5, ...), ...]` as a tuple of keyword dicts."""
    if value is None:
        return ()
    if isinstance(value, (CallValue, dict)) or not isinstance(value, (list, tuple)):
        raise SearchError("stages must be a list of stage(...) calls, e.g. [stage(layers = 5, keep = 8)]")
    out = []
    for item in value:
        if isinstance(item, CallValue) and item.name == "stage" and not item.args:
            item = dict(item.kwargs)
        if not isinstance(item, dict):
            raise SearchError(f"stages: expected stage(NAME = VALUE, ...), got {item!r}")
        out.append(dict(item))
    return tuple(out)


@attrs.frozen(kw_only=True)
class SearchConfig:
    epochs: int = attrs.field(default=50, validator=positive)
    batch: int = attrs.field(default=64, validator=positive)
    train_portion: float = attrs.field(default=0.5, validator=_portion)
    levels: int = 2  # 2: bi-level (α on the validation split); 1: single-level on the training split
    order: int = 1
    lr: float = attrs.field(default=0.025, validator=positive)
    momentum: float = attrs.field(default=0.9, validator=non_negative)
    weight_decay: float = attrs.field(default=3e-4, validator=non_negative)
    nesterov: bool = False
    schedule: str = "cosine"  # cosine | cosine_power | constant | linear | step
    lr_min: float = attrs.field(default=0.001, validator=non_negative)
    schedule_exponent: float = attrs.field(default=2.0, validator=positive)
    warmup: int = attrs.field(default=0, validator=non_negative)
    schedule_gamma: float = attrs.field(default=0.97, validator=positive)  # step: the factor ...
    schedule_every: int = attrs.field(default=1, validator=positive)  # ... applied every this many epochs
    clip: float = attrs.field(default=5.0, validator=non_negative)  # 0: no clipping
    arch_optimizer: str = "adam"
    arch_lr: float = attrs.field(default=3e-4, validator=non_negative)
    arch_betas: tuple[float, float] = attrs.field(default=(0.5, 0.999), validator=_betas)
    arch_weight_decay: float = attrs.field(default=1e-3, validator=non_negative)
    arch_momentum: float = attrs.field(default=0.0, validator=non_negative)
    arch_clip: float = attrs.field(default=0.0, validator=non_negative)
    arch_start: int = attrs.field(default=0, validator=non_negative)
    arch_every: int = attrs.field(default=1, validator=positive)  # α step every N weight steps (ProxylessNAS: 5)
    memory: str = "auto"  # plain | recompute | auto
    precision: str = "fp32"  # fp32 | bf16 (autocast; α and its softmax stay fp32)
    channels_last: bool = True  # NHWC tensors: faster on a GPU and on a CPU (docs/performance.md)
    cuda_graphs: bool | None = None  # None: replay each step from a CUDA graph where the step is static
    share_work: bool = True  # exact shared-work savings in mixed edges (off only for comparisons)
    fuse_edges: bool | None = None  # edges reading one state run together (runtime/fuse.py); None: on CUDA
    torch_compile: bool | None = None  # torch.compile each cell, checked against eager (runtime/compiled.py); None: off
    fix_alpha: bool = False  # α stays uniform (zero) during search; pair with the perturbation selector
    affine: bool = False
    cutout: int = attrs.field(default=0, validator=non_negative)
    drop_path: float = attrs.field(default=0.0, validator=fraction)  # rises 0 -> this over the epochs (RobustDARTS)
    seed: int = attrs.field(default=0, validator=seed_value)
    deterministic: bool = True
    dataset: str = "digits"
    data_dir: str | None = attrs.field(default=None, converter=absolute_dir)
    device: str = "auto"
    # progressive search (P-DARTS; runtime/progressive.py): empty `stages` is a plain one-stage search
    stages: tuple[dict[str, Any], ...] = attrs.field(default=(), converter=_stages)
    skip_limit: int | None = attrs.field(default=None, validator=none_or_non_negative)  # final genotype: at most this many skip_connect in the normal cell
    carry_alpha: bool = False  # next stage starts from the kept columns of α (official code: re-initialised)

    def __attrs_post_init__(self) -> None:
        if self.levels not in (1, 2):
            raise SearchError(f"levels must be 1 or 2, got {self.levels}")
        if self.order not in (1, 2):
            raise SearchError(f"order must be 1 (first-order) or 2 (second-order), got {self.order}")
        if self.order == 2 and self.levels == 1:
            raise SearchError("second-order DARTS needs bi-level search (levels = 2)",
                              hint="set levels = 2 (--opt levels=2) to search bi-level, or search first-order "
                                   "(--first-order)")
        if self.order == 2 and self.precision == "bf16":
            # the finite-difference Hessian term differences two α gradients at w ± ε·v (ε·‖v‖ = 0.01): in
            # bfloat16 their rounding is of the size of that difference (measured on the DARTS space: the term
            # is 0.8-0.9 off its fp32 value, the first-order gradient 0.13-0.14), so it would be mostly noise
            raise SearchError("second-order DARTS needs precision = \"fp32\": its finite-difference Hessian term is "
                              "no larger than bfloat16's rounding",
                              hint="drop precision = \"bf16\" (--opt precision=fp32), or search first-order "
                                   "(--first-order)")
        check_schedule_known(self.schedule)
        check_weight_options(self)
        if self.precision not in ("fp32", "bf16"):
            raise SearchError(f"unknown precision {self.precision!r}", hint="fp32 or bf16")
        if self.channels_last not in (True, False):
            raise SearchError(f"channels_last must be true or false, got {self.channels_last!r}")
        if self.cuda_graphs not in (None, True, False):
            raise SearchError(f"cuda_graphs must be true or false, got {self.cuda_graphs!r}")
        if self.share_work not in (True, False):
            raise SearchError(f"share_work must be true or false, got {self.share_work!r}")
        if self.fuse_edges not in (None, True, False):
            raise SearchError(f"fuse_edges must be true or false, got {self.fuse_edges!r}")
        if self.torch_compile not in (None, True, False):
            raise SearchError(f"torch_compile must be true or false, got {self.torch_compile!r}")
        if self.memory not in ("plain", "recompute", "auto"):
            raise SearchError(f"unknown memory mode {self.memory!r}", hint="plain, recompute or auto")
        if self.arch_optimizer not in ("adam", "sgd"):
            raise SearchError(f"unknown architecture optimiser {self.arch_optimizer!r}", hint="adam or sgd")

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


# What each architecture optimiser reads; `adam(momentum = 0.9)` or `sgd(betas = ...)` would be dropped unread.
ARCH_OPTIONS = {"adam": ("lr", "betas", "weight_decay"), "sgd": ("lr", "momentum", "weight_decay")}


def arch_option_problem(config: SearchConfig, given: Mapping[str, Any]) -> str | None:
    """Why `--opt` settings `given` do not reach `config`'s architecture optimiser (`arch_momentum` under adam), or None.

    Only what the user gave is asked: a method preset's or the file's values for the other optimiser
    (ProxylessNAS' Adam betas when `--relax snas` switches to SGD) are simply not used.
    """
    for option in ("betas", "momentum"):
        field = f"arch_{option}"
        if option not in ARCH_OPTIONS[config.arch_optimizer] and given.get(field) is not None:
            if given[field] != attrs.fields_dict(SearchConfig)[field].default:
                return (f"--opt {field}: the {config.arch_optimizer} architecture optimiser takes no {option}; its "
                        f"options are {', '.join('arch_' + k for k in ARCH_OPTIONS[config.arch_optimizer])}")
    return None


def _call_kwargs(value: Any, name: str) -> tuple[str, dict[str, Any]]:
    if isinstance(value, CallValue):
        return value.name, dict(value.kwargs)
    raise SearchError(f"search setting {name!r} must be a call such as sgd(lr = 0.025)")


def refuse_unread_min(name: str, given: str = "") -> None:
    """A minimum rate the schedule never reads (`step`, `constant`, `linear`) is refused, as its other options are;
    `given` says how it was set where the file's line does not (`--opt lr_min=0.1`). Asked of a file's `min =`
    and of the user's overrides, not of a relaxation's preset (GDAS' lr_min beside a space's `step`)."""
    if name in SCHEDULES and "min" not in schedule_takes(name):
        raise SearchError(f"learning-rate schedule {name!r} takes no min ({given + '; ' if given else ''}{name} takes "
                          f"{', '.join(schedule_takes(name)) or 'no options'})", hint=SCHEDULE_HINT)


def from_space(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a space's `search:` block (already type-checked by the compiler) to config fields."""
    out: dict[str, Any] = {}
    plain = {"epochs", "batch", "train_portion", "levels", "order", "clip", "arch_clip", "arch_start", "affine",
             "cutout", "seed", "fix_alpha", "arch_every", "memory", "precision", "channels_last", "cuda_graphs",
             "fuse_edges", "torch_compile"}
    for key, value in settings.items():
        if key in plain:
            out[key] = value
        elif key in ("stages", "skip_limit", "carry_alpha"):  # progressive search
            out[key] = value
        elif key == "drop_path":
            if isinstance(value, Ramp) and value.start != 0:
                raise SearchError(f"drop_path = {value.start} -> {value.end}: the search's drop path always rises "
                                  "from 0", hint=f"write drop_path = {value.end} (it rises linearly from 0 to it)")
            out["drop_path"] = value.end if isinstance(value, Ramp) else value
        elif key == "weights":
            _, kw = _call_kwargs(value, key)
            for src, dst in (("lr", "lr"), ("momentum", "momentum"), ("weight_decay", "weight_decay"),
                             ("nesterov", "nesterov")):
                if src in kw:
                    out[dst] = kw.pop(src)
            if kw:
                raise SearchError(f"sgd() has no option {next(iter(kw))!r}",
                                  hint="options: lr, momentum, weight_decay, nesterov")
        elif key == "lr_schedule":
            name, kw = _call_kwargs(value, key)
            out["schedule"] = name
            if "min" in kw:  # lr_min has a default: asked here
                refuse_unread_min(name)
            for src, dst in (("min", "lr_min"), ("exponent", "schedule_exponent"), ("warmup", "warmup"),
                             ("gamma", "schedule_gamma"), ("every", "schedule_every")):
                if src in kw:
                    out[dst] = kw.pop(src)
            if kw:
                raise SearchError(f"{name}() has no option {next(iter(kw))!r}",
                                  hint="options: min, warmup, exponent (cosine_power), gamma, every (step)")
        elif key == "arch":
            name, kw = _call_kwargs(value, key)
            out["arch_optimizer"] = name
            takes = ARCH_OPTIONS.get(name, ("lr", "betas", "weight_decay", "momentum"))
            for src, dst in (("lr", "arch_lr"), ("betas", "arch_betas"), ("weight_decay", "arch_weight_decay"),
                             ("momentum", "arch_momentum")):
                if src in kw and src in takes:  # betas as a tuple, if a sequence (check_types says what else it must be)
                    value = kw.pop(src)
                    out[dst] = tuple(value) if src == "betas" and isinstance(value, (list, tuple)) else value
            if kw:
                raise SearchError(f"{name}() has no option {next(iter(kw))!r}", hint=f"options: {', '.join(takes)}")
    return out


FIELDS = tuple(f.name for f in attrs.fields(SearchConfig))

# A `.nas` block's call settings and the flat fields their options become (see from_space): `--opt`
# takes the fields, so `--opt weights=...` must point there rather than at the nearest spelling.
CALL_SETTINGS = {
    "weights": ("lr", "momentum", "weight_decay", "nesterov"),
    "lr_schedule": ("schedule", "lr_min", "schedule_exponent", "warmup", "schedule_gamma", "schedule_every"),
    "arch": ("arch_optimizer", "arch_lr", "arch_betas", "arch_weight_decay", "arch_momentum"),
}


def unknown_option_hint(key: str, fields: tuple[str, ...]) -> str:
    """The hint for an unknown `--opt` name: a call setting's own fields, else the nearest field."""
    if key in CALL_SETTINGS and all(f in fields for f in CALL_SETTINGS[key]):
        return f"--opt takes the options of {key} one by one: {', '.join(CALL_SETTINGS[key])}"
    return did_you_mean(key, fields) or f"options: {', '.join(fields)}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _expected(kind: Any) -> tuple[str, Callable[[Any], bool]] | None:
    """(what a value of annotation `kind` is called, a check), or None for kinds checked elsewhere."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [_expected(a) for a in args if a is not type(None)]
        if len(inner) != 1 or inner[0] is None:
            return None
        name, ok = inner[0]
        return name, lambda v: v is None or ok(v)
    if kind is bool:
        return "true or false", lambda v: v in (True, False) and isinstance(v, bool)
    if kind is int:
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if kind is float:
        return "a number", _is_number
    if kind is str:
        return "a string", lambda v: isinstance(v, str)
    if typing.get_origin(kind) is tuple and args and Ellipsis not in args and all(a is float for a in args):
        return (f"{len(args)} numbers, e.g. ({', '.join(['0.5'] * len(args))})",
                lambda v: isinstance(v, (tuple, list)) and len(v) == len(args) and all(map(_is_number, v)))
    return None


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """A config class's field types, resolved once (resolving the string annotations is most of a check)."""
    return typing.get_type_hints(cls)


def check_types(cls: type, values: Mapping[str, Any], what: str) -> None:
    """Raise a SearchError naming the first setting whose value has the wrong type for its `cls` field.

    Shared by the search settings (`SearchConfig`) and the training settings (`TrainConfig`), so that
    `--opt lr=abc` says which setting wants what instead of failing inside a validator.
    """
    hints = _type_hints(cls)
    meanings = SEARCH_SETTINGS if what == "search" else TRAIN_SETTINGS
    for key, value in values.items():
        expected = _expected(hints.get(key))
        if expected is not None and not expected[1](value):
            raise SearchError(f"{what} setting {key} must be {expected[0]}, got {value!r}",
                              hint=meanings[key][2] if key in meanings else None)


def setting_errors(settings: Mapping[str, Any], spans: Mapping[str, SourceSpan | None],
                   build: Callable[[Mapping[str, Any]], Any]) -> list[NascError]:
    """The errors `build` (settings -> config) finds in a block, each at its setting's line.

    Each setting is tried alone, on the defaults, so that the error names its line; then all together,
    for the rules that tie two settings (order 2 needs levels 2), reported at a setting the message
    names, else at the block's first.
    """
    errors: list[NascError] = []
    for key, value in settings.items():
        try:
            build({key: value})
        except SearchError as e:
            errors.append(NasSemanticError(e.message, span=spans.get(key), hint=e.hint))
    if not errors:
        try:
            build(settings)
        except SearchError as e:
            named = [spans.get(k) for k in settings if re.search(rf"\b{k}\b", e.message)] + list(spans.values())
            errors.append(NasSemanticError(e.message, span=next((s for s in named if s), None), hint=e.hint))
    return errors


def raise_in_file_order(errors: list[NascError]) -> None:
    if errors:
        errors.sort(key=lambda e: (e.span.file, e.span.line, e.span.col) if e.span else ("", 0, 0))
        raise NasSemanticError(errors[0].message, span=errors[0].span, hint=errors[0].hint, errors=errors)


def check_search_block(settings: Mapping[str, Any], spans: Mapping[str, SourceSpan | None],
                       param_names: Iterable[str] = ()) -> None:
    """A space's `search:` values and call options, each at its own line (`nasc check` and every search).

    The compiler checks names and types; what a value may be (a positive batch, a known option of
    cosine(...)) is the config's to say.
    """
    errors = setting_errors(settings, spans, lambda values: make_config(values, {}))
    if not errors and "stages" in settings:  # a progressive search's stage() options and parameters
        from nasc.runtime.stages import parse_stages

        try:
            parse_stages(make_config(settings, {}), param_names)
        except SearchError as e:
            key = "skip_limit" if e.message.startswith("skip_limit") else "stages"
            errors.append(NasSemanticError(e.message, span=spans.get(key), hint=e.hint))
    raise_in_file_order(errors)


def check_space_settings(ir: Any) -> None:
    """What a search or training would refuse in a compiled space's own text: its search and train values, relax
    and select options.

    For `nasc check` and `nasc compile`, which otherwise stop at names and types. Relaxation and
    selector options are known only to their classes, so a space that sets some costs the torch
    import here.
    """
    check_search_block(ir.search, {k: ir.spans.get(f"search.{k}") for k in ir.search}, ir.params)
    from nasc.runtime.train_config import check_train_block  # torch-free, as this module

    trained = {k: v for k, v in ir.train.items() if k not in ir.params}  # the rest are space parameters
    check_train_block(trained, {k: ir.spans.get(f"train.{k}") for k in trained})
    if ir.relax.options:
        from nasc.runtime.relaxations.base import load_relaxation

        try:
            load_relaxation(ir.relax.name, dict(ir.relax.options))
        except NascError as e:
            raise NasSemanticError(e.message, span=ir.spans.get("relax"), hint=e.hint) from None
    if ir.select.options:
        from nasc.runtime.selectors import load_selector

        try:
            load_selector(ir.select.name, dict(ir.select.options)).check(ir)
        except NascError as e:
            raise NasSemanticError(e.message, span=ir.spans.get("select"), hint=e.hint) from None


def build_config(cls: type, values: dict[str, Any], overrides: Mapping[str, Any], what: str) -> Any:
    """`cls` from a block's `values` and the overrides on top (CLI flags or `--opt name=value` with
    field names; None: not given), each checked by name before the class's own rules run."""
    fields = tuple(f.name for f in attrs.fields(cls))
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in fields:
            raise SearchError(f"unknown {what} option {key!r}", hint=unknown_option_hint(key, fields))
        values[key] = value
    check_types(cls, values, what)
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise SearchError(f"invalid {what} settings: {e}") from None


def refuse_unread_min_override(config, overrides: Mapping[str, Any]) -> None:
    """`--opt lr_min` (or `lr_min=` in the Python API) for a schedule that never reads it: an error."""
    if overrides.get("lr_min") is not None:
        refuse_unread_min(config.schedule, f"--opt lr_min={overrides['lr_min']}")


def make_config(settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> SearchConfig:
    """Space settings, then overrides (CLI flags or `--opt name=value` with config field names)."""
    return build_config(SearchConfig, from_space(settings), overrides, "search")
