"""The search settings a space may declare, with their types and meaning.

Kept in the compiler (as data) so that `nasc compile` rejects a misspelt
setting at its line, long before a search would have ignored it.
"""

from __future__ import annotations

from typing import Any

from nasc.compiler.expr import CallValue, Ramp
from nasc.compiler.ir import SpaceIR
from nasc.errors import NascError, NasSemanticError, did_you_mean

NUMBER = (int, float)

# name -> (accepted python types, allowed call names or None, one-line meaning)
SEARCH_SETTINGS: dict[str, tuple[tuple[type, ...], tuple[str, ...] | None, str]] = {
    "epochs": ((int,), None, "search epochs"),
    "batch": ((int,), None, "batch size (of each of the train and validation batches)"),
    "train_portion": (NUMBER, None, "share of the training set used for weights; the rest drives α"),
    "levels": ((int,), None, "2: bi-level (α on validation data); 1: single-level on the training data"),
    "order": ((int,), None, "1: first-order α gradient; 2: second-order (unrolled) DARTS"),
    "weights": ((CallValue,), ("sgd",), "weight optimiser, e.g. sgd(lr = 0.025, momentum = 0.9, weight_decay = 3e-4)"),
    "lr_schedule": ((CallValue,), ("cosine", "cosine_power", "constant", "linear", "step"), "weight learning-rate schedule"),
    "clip": (NUMBER, None, "gradient-norm clip for the weights (0: none)"),
    "arch": ((CallValue,), ("adam", "sgd"), "architecture optimiser, e.g. adam(lr = 3e-4, betas = (0.5, 0.999))"),
    "arch_clip": (NUMBER, None, "gradient-norm clip for α (0: none)"),
    "arch_start": ((int,), None, "first epoch with α updates (earlier epochs train weights only)"),
    "arch_every": ((int,), None, "an α step every N weight steps (ProxylessNAS: 5)"),
    "fix_alpha": ((bool,), None, "keep α uniform during search (DARTS-PT's fixed-α variant)"),
    "affine": ((bool,), None, "learnable BN affine parameters inside cells during search (default false)"),
    "cutout": ((int,), None, "cutout square side during search (0: off)"),
    "drop_path": (NUMBER + (Ramp,), None,
                  "drop path on each mixed edge's output during search, rising linearly from 0 (RobustDARTS)"),
    "seed": ((int,), None, "default random seed"),
    "precision": ((str,), None, '"fp32" or "bf16" (autocast; α and its softmax stay fp32)'),
    "memory": ((str,), None, 'supernet memory mode: "plain", "recompute" (keep only edge inputs for backward) '
                             'or "auto" (plain when it fits, else recompute)'),
    "channels_last": ((bool,), None, "channels-last (NHWC) tensors in the supernet (default true: faster on a GPU "
                      "and on a CPU; false keeps NCHW)"),
    "cuda_graphs": ((bool,), None, "replay each search step from a CUDA graph where its structure is static "
                    "(default: on where possible; false turns it off)"),
    "fuse_edges": ((bool,), None, "compute the mixed edges that read one state together: shared ReLU and pooling, "
                   "one grouped convolution per candidate (exact; default: on a GPU, off on a CPU)"),
    "torch_compile": ((bool,), None, "torch.compile each cell where the step is static, using a compiled cell only "
                      "after it matches the eager one (default: off)"),
    # progressive search (P-DARTS, Chen et al. 2019; runtime/progressive.py)
    "stages": ((tuple,), None, "progressive search: [stage(layers = 5, keep = 8, skip_dropout = 0.1), ...]; "
               "each stage recompiles the space and keeps the `keep` strongest ops of every edge"),
    "skip_limit": ((int,), None, "progressive search: at most this many skip_connect in the normal cell"),
    "carry_alpha": ((bool,), None, "progressive search: start each stage from the last stage's α "
                    "(default: re-initialised, as the official code)"),
}


# Training the derived network (`nasc train`); names of space parameters (C, layers) are also allowed
# in a `train:` block and override the parameters for the evaluation network.
TRAIN_SETTINGS: dict[str, tuple[tuple[type, ...], tuple[str, ...] | None, str]] = {
    "epochs": ((int,), None, "training epochs"),
    "batch": ((int,), None, "batch size"),
    "weights": ((CallValue,), ("sgd",), "optimiser, e.g. sgd(lr = 0.025, momentum = 0.9, weight_decay = 3e-4)"),
    "lr_schedule": ((CallValue,), ("cosine", "cosine_power", "constant", "linear", "step"), "learning-rate schedule"),
    "clip": (NUMBER, None, "gradient-norm clip (0: none)"),
    "drop_path": (NUMBER, None, "drop-path probability, raised linearly over the epochs (DARTS)"),
    "cutout": ((int,), None, "cutout square side (0: off)"),
    "aux_weight": (NUMBER, None, "weight of the auxiliary head's loss (default: the network's aux weight; 0: not trained)"),
    "label_smoothing": (NUMBER, None, "label smoothing of the cross-entropy"),
    "bn_weight_decay": ((bool,), None, "weight decay on batch-norm weights and biases too (default true, as DARTS; "
                                       "false: ProxylessNAS' no_decay_keys = 'bn')"),
    "seed": ((int,), None, "default random seed"),
    "channels_last": ((bool,), None, "channels-last (NHWC) tensors (default true; false keeps NCHW)"),
}


def takes_string(block: str, name: str) -> bool:
    schema = SEARCH_SETTINGS if block == "search" else TRAIN_SETTINGS
    return name in schema and schema[name][0] == (str,)


def check_settings(ir: SpaceIR) -> None:
    """Unknown names, wrong types and unknown optimiser/schedule calls, at the setting's line."""
    errors: list[NascError] = []
    blocks = [("search", ir.search, SEARCH_SETTINGS), ("train", ir.train, TRAIN_SETTINGS)]
    for block, values, schema in blocks:
        errors.extend(_check_block(ir, block, values, schema))
    if errors:
        raise NasSemanticError(errors[0].message, span=errors[0].span, hint=errors[0].hint, errors=errors)


def _check_block(ir: SpaceIR, block: str, values: dict, schema: dict) -> list[NascError]:
    errors: list[NascError] = []
    for name, value in values.items():
        span = ir.spans.get(f"{block}.{name}")
        if block == "train" and name in ir.params:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errors.append(NasSemanticError(f"train: parameter {name!r} must be a number", span=span))
            continue
        if name not in schema:
            known = sorted(schema) + (sorted(ir.params) if block == "train" else [])
            errors.append(NasSemanticError(f"unknown {block} setting {name!r}", span=span,
                                           hint=did_you_mean(name, known) or f"settings: {', '.join(known)}"))
            continue
        types, calls, meaning = schema[name]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            errors.append(NasSemanticError(f"{block} setting {name!r} has the wrong type ({_kind(value)})",
                                           span=span, hint=meaning))
        elif name == "memory" and value not in ("plain", "recompute", "auto"):
            errors.append(NasSemanticError(f"memory = {value!r} is not a memory mode", span=span,
                                           hint='one of "plain", "recompute", "auto"'))
        elif calls is not None and value.name not in calls:
            errors.append(NasSemanticError(f"{name} = {value.name}(...) is not supported", span=span,
                                           hint=did_you_mean(value.name, calls) or f"one of: {', '.join(calls)}"))
    return errors


def _kind(value: Any) -> str:
    if isinstance(value, CallValue):
        return f"a call of {value.name}"
    return type(value).__name__


# Relaxations whose mixed edges run the candidates on a fraction of the channels (PC-DARTS):
# name -> (option holding the divisor, its default). The cost model needs this to report the
# supernet the runtime will actually build, without importing the relaxation.
EDGE_CHANNEL_DIVISOR: dict[str, tuple[str, int]] = {
    "partial-channel": ("k", 4),
    "pcdarts": ("k", 4),
}


def edge_channel_divisor(ir: SpaceIR) -> int:
    entry = EDGE_CHANNEL_DIVISOR.get(ir.relax.name)
    if entry is None:
        return 1
    option, default = entry
    k = ir.relax.option(option, default)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:  # the costs divide by it before the runtime checks it
        raise NasSemanticError(f"{ir.relax.name} option {option} must be a positive integer, got {k!r}",
                               span=ir.spans.get("relax"))
    return k
