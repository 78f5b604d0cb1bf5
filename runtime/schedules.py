"""Learning-rate schedules, as pure functions of the epoch.

`cosine` is DARTS' CosineAnnealingLR stepped once per epoch (so is AutoDL's NAS-Bench-201
search and training: its scheduler is updated every iteration but uses the iteration only in
warm-up, which every NB201 config sets to 0);
`cosine_power` is sharpDARTS' cosine power annealing (Hundt et al. 2019,
cnn/cosine_power_annealing.py): with c_i = (1 + cos(π i / T)) / 2 and
P_i = e^(c_i + 1), the rate is min + (max − min)(P_i − min_j P_j)/(max_j P_j − min_j P_j),
after a linear warm-up of W epochs (i and T shifted by −W; as the code, the min and max run over
every epoch's index, warm-up ones included); `step` is StepLR stepped once per epoch
(DARTS' ImageNet training: × 0.97 after every epoch); `linear` is PC-DARTS' ImageNet decay.
`cosine`, `linear`, `step` and `constant` take
`warmup` as PC-DARTS' ImageNet training does (train_imagenet.py, 5 epochs at batch 1024): epoch
e < W runs at the schedule's own rate for e times (e + 1) / W (the script scales its `current_lr`),
later epochs at the schedule's own rate (not shifted by W).

`SCHEDULES` maps a name to `(epoch, epochs, lr, lr_min, *, exponent, warmup) -> lr`;
plugins register more there (`nasc.plugins`). `step`'s own options (`gamma`, `every`) are
passed only when they are set, so schedules that do not know them never see them.
"""

from __future__ import annotations

import math

from nasc.errors import SearchError, did_you_mean
from nasc.runtime.registry import Registry, call_problem

SCHEDULES: Registry = Registry(
    "learning-rate schedule", accepts=(callable, "a function (epoch, epochs, lr, lr_min, *, exponent, warmup) -> lr"),
    calls=lambda f: call_problem(f, 0, 1, 0.1, 0.0, exponent=2.0, warmup=0))


def cosine(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Epoch 0 → lr; approaches lr_min at the end (DARTS, PC-DARTS)."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def cosine_power(epoch: int, epochs: int, lr: float, lr_min: float, exponent: float = 2.0, warmup: int = 0) -> float:
    """sharpDARTS' schedule: epoch index 0-based here, i = epoch + 1 in the code's 1-based terms.

    As `cosine_power_annealing` does, the W + 1 warm-up epochs ramp the proportion (e + 1)/(W + 1) of
    the range, lr_min + (lr − lr_min)·p (not lr·p), and the proportions are normalised over the shifted
    indices j = 1 − W … T of all epochs, the warm-up ones included: with W > 0 their j = 0 holds the
    maximum, so the epochs after the ramp run slightly below the values of a T-epoch curve without one.
    """
    if warmup and epoch <= warmup:
        return lr_min + (lr - lr_min) * (epoch + 1) / (warmup + 1)
    total = epochs - warmup
    i = epoch + 1 - warmup

    def power(j: int) -> float:
        c = (1 + math.cos(math.pi * j / total)) / 2
        return c if exponent == 1 else exponent ** (c + 1)

    values = [power(j) for j in range(1 - warmup, total + 1)]
    lo, hi = min(values), max(values)
    if hi == lo:
        return lr
    return lr_min + (lr - lr_min) * (power(i) - lo) / (hi - lo)


def linear_warmup(schedule):
    """`schedule` under PC-DARTS' linear warm-up: `warmup` was passed to every schedule but read only by
    cosine_power, so `cosine(warmup = 5)` (PC-DARTS ImageNet) trained without one and said nothing.
    The ramp scales the schedule's rate for the epoch, not lr, as train_imagenet.py scales `current_lr`
    (with `step`'s 0.97 per epoch, epoch 4 runs at 0.885 · lr, not lr)."""
    def warmed(epoch, epochs, lr, lr_min, *, warmup=0, **kw):
        rate = schedule(epoch, epochs, lr, lr_min, **kw)
        return rate * (epoch + 1) / warmup if warmup and epoch < warmup else rate
    return warmed


def linear(epoch: int, epochs: int, lr: float, tail: int = 5) -> float:
    """PC-DARTS' ImageNet decay (train_imagenet.py `adjust_lr`, its default `--lr_scheduler linear`): from lr down to
    lr / (E - 5) over the first E - 5 epochs, then a fifth of that slope over the last 5 ("lr * 1/250 is relatively
    large"), ending at lr / (5 (E - 5)). Runs of 5 epochs or fewer decay as lr (E - e) / E, without the tail."""
    if epochs <= tail:
        tail = 0
    if epochs - epoch > tail:
        return lr * (epochs - tail - epoch) / (epochs - tail)
    return lr * (epochs - epoch) / ((epochs - tail) * tail)


def step(epoch: int, lr: float, gamma: float = 0.97, every: int = 1) -> float:
    """lr · gamma^(epoch // every): epoch 0 runs at lr (DARTS' StepLR, stepped before each epoch)."""
    return lr * gamma ** (epoch // every)


SCHEDULES.add("cosine", linear_warmup(lambda epoch, epochs, lr, lr_min, **kw: cosine(epoch, epochs, lr, lr_min)),
              doc="cosine annealing from lr to lr_min, stepped per epoch (DARTS), after an optional linear warm-up",
              origin=__name__)
SCHEDULES.add("cosine_power", lambda epoch, epochs, lr, lr_min, *, exponent=2.0, warmup=0, **kw:
              cosine_power(epoch, epochs, lr, lr_min, exponent, warmup),
              doc="sharpDARTS' cosine power annealing with linear warm-up", origin=__name__)
SCHEDULES.add("constant", linear_warmup(lambda epoch, epochs, lr, lr_min, **kw: lr),
              doc="lr throughout (after an optional linear warm-up)", origin=__name__)
SCHEDULES.add("linear", linear_warmup(lambda epoch, epochs, lr, lr_min, **kw: linear(epoch, epochs, lr)),
              doc="PC-DARTS' ImageNet linear decay (a gentler slope over the last 5 epochs), after an optional linear "
                  "warm-up", origin=__name__)
SCHEDULES.add("step", linear_warmup(lambda epoch, epochs, lr, lr_min, *, gamma=0.97, every=1, **kw:
                                    step(epoch, lr, gamma, every)),
              doc="lr × gamma every `every` epochs (DARTS ImageNet: gamma 0.97, every epoch)", origin=__name__)

STEP_DEFAULTS = {"gamma": 0.97, "every": 1}
OPTION_DEFAULTS = {"exponent": 2.0, "warmup": 0, **STEP_DEFAULTS}
FIELD = {"exponent": "schedule_exponent", "warmup": "warmup", "gamma": "schedule_gamma", "every": "schedule_every"}
# The options each built-in reads; the others would be accepted and silently ignored (`cosine(warmup = 5)`).
# (`min` is listed for the messages only: every schedule is passed lr_min.)
BUILTIN_OPTIONS = {"cosine": ("min", "warmup"), "cosine_power": ("min", "exponent", "warmup"), "constant": ("warmup",),
                   "linear": ("warmup",), "step": ("gamma", "every", "warmup")}
HINT = "drop it, or pick a schedule that reads it: cosine_power(min, exponent, warmup), step(gamma, every, warmup)"


def takes(name: str) -> tuple[str, ...]:
    """The options schedule `name` reads: a built-in's own, else a plugin's `exponent` and `warmup` (always passed)
    and `gamma` / `every` if its parameters bind them."""
    entry = SCHEDULES.entry(name)
    if entry.origin == __name__:
        return BUILTIN_OPTIONS[name]
    own = tuple(k for k in STEP_DEFAULTS
                if call_problem(entry.value, 0, 1, 0.1, 0.0, exponent=2.0, warmup=0, **{k: STEP_DEFAULTS[k]}) is None)
    return ("min", "exponent", "warmup") + own


def options_problem(name: str, **options: float) -> str | None:
    """Why schedule `name` cannot take the options set here (`exponent`, `warmup`, `gamma`, `every`), or None.

    An option the schedule does not read would change nothing (a built-in ignores it), and a plugin
    without `gamma`/`every` parameters would fail with a TypeError at the first epoch; asked before
    anything runs, the search or training refuses the setting instead, naming what the schedule takes.
    """
    given = {k: v for k, v in options.items() if v != OPTION_DEFAULTS[k]}
    if not given or name not in SCHEDULES:
        return None
    own = takes(name)
    extra = [k for k in given if k not in own]
    if not extra:
        return None
    key = extra[0]
    return (f"learning-rate schedule {name!r} takes no {key} ({key} = {given[key]}, --opt {FIELD[key]}); "
            f"{name} takes {', '.join(own) or 'no options'}")


def learning_rate(name: str, epoch: int, epochs: int, lr: float, lr_min: float, *, exponent: float = 2.0,
                  warmup: int = 0, gamma: float = 0.97, every: int = 1) -> float:
    given = {k: v for k, v in (("gamma", gamma), ("every", every)) if v != STEP_DEFAULTS[k]}
    return SCHEDULES.get(name)(epoch, epochs, lr, lr_min, exponent=exponent, warmup=warmup, **given)


def check_known(name: str) -> None:
    """Refuse an unregistered schedule before the run directory is made (it failed at the first epoch)."""
    if name not in SCHEDULES:  # plugins may register more
        raise SearchError(f"unknown learning-rate schedule {name!r}",
                          hint=did_you_mean(name, SCHEDULES.names())
                               or f"registered: {', '.join(sorted(SCHEDULES.names()))}")


def check_weight_options(cfg) -> None:
    """The weight optimiser's settings a search and a training share (SearchConfig, TrainConfig): an option the
    schedule does not read, and nesterov without momentum, would change nothing, so they are refused."""
    problem = options_problem(cfg.schedule, exponent=cfg.schedule_exponent, warmup=cfg.warmup,
                              gamma=cfg.schedule_gamma, every=cfg.schedule_every)
    if problem is not None:
        raise SearchError(problem, hint=HINT)
    if cfg.schedule == "cosine_power" and cfg.schedule_exponent < 1:  # sharpDARTS' code refuses it too
        raise SearchError(f"cosine_power needs exponent ≥ 1, got {cfg.schedule_exponent:g}: the curve e^(c + 1) "
                          "then rises with the epoch, so the rate would climb from min to lr",
                          hint="exponent 1 is plain cosine annealing; larger ones decay faster (sharpDARTS: 2)")
    if cfg.nesterov is True and cfg.momentum == 0:  # torch refuses it; the optimiser used to drop it unsaid
        raise SearchError("nesterov = true needs momentum > 0 (with momentum 0 it is plain SGD)",
                          hint="set momentum (e.g. 0.9), or nesterov = false")
