"""The Python API: nasc's pipeline as a handful of functions for notebooks and scripts.

    import nasc
    ir = nasc.compile_space("darts", params={"C": 8})
    run = nasc.search("darts", params={"C": 4, "layers": 5}, epochs=1, run_dir="runs/try")
    trained = nasc.train(run, epochs=1, params={"C": 8, "layers": 5})
    nasc.viz(run, "genotype.png")

Every function is a thin wrapper over the library (`nasc.compiler`, `nasc.runtime`)
with keyword arguments named like the CLI's options; errors are `nasc.errors.NascError`
(print `e.render()` for the compiler-style message). Installed plugins (entry points)
are loaded on first use; `load_plugins([...])` loads more. `import nasc` stays light:
these functions are imported on first attribute access, and torch only when a
function needs it. docs/api.md documents each one with an example.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from nasc.errors import NascError

if TYPE_CHECKING:  # pragma: no cover - names for annotations only; importing them pulls in torch
    from nasc.compiler.genotype import Genotype
    from nasc.compiler.ir import SpaceIR
    from nasc.plugins import LoadedPlugin
    from nasc.runtime.search import SearchResult
    from nasc.runtime.supernet import Network

Event = dict[str, Any]

__all__ = ["compile_space", "build_supernet", "search", "resume", "select", "load_genotype", "build_network",
           "train", "TrainResult", "viz", "export", "load_plugins"]

_plugins_loaded = False


def _plugins() -> None:
    """Load installed entry-point plugins once per process (the CLI does the same at start)."""
    global _plugins_loaded
    if not _plugins_loaded:
        import warnings

        from nasc.plugins import load_plugins as _load

        for record in _load():
            if record.error is not None:
                warnings.warn(record.error.render(), RuntimeWarning, stacklevel=3)
        _plugins_loaded = True


def load_plugins(plugins: Sequence[str | Path] | str | Path = (), *, entry_points: bool = True) -> list[LoadedPlugin]:
    """Load plugin modules or files, a list or just one (and installed entry points); returns what each
    did or why it failed."""
    from nasc.plugins import load_plugins as _load

    return _load(plugins, entry_points=entry_points)


# ---------------------------------------------------------------- argument checks (raw TypeErrors become NascErrors)


def _arg_error(name: str, must: str, value: Any, hint: str | None = None) -> NascError:
    shown = repr(value) if len(repr(value)) <= 60 else f"a {type(value).__name__}"
    return NascError(f"{name} must be {must}, got {shown}", hint=hint)


def _check_path(name: str, value: Any, *, optional: bool = False, also: str = "") -> None:
    """A file, directory or space name: a str or an os.PathLike."""
    if value is None and optional:
        return
    if not isinstance(value, (str, os.PathLike)):
        raise _arg_error(name, f"a str or Path{also}", value)


def _check_str(name: str, value: Any, what: str = "a str") -> None:
    if value is not None and not isinstance(value, str):
        raise _arg_error(name, what, value)


def _check_mapping(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise _arg_error(name, "a dict of NAME: VALUE", value, hint=f'e.g. {name}={{"C": 4}}'
                         if name == "params" else None)


def _check_int(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _arg_error(name, "an int", value)


def _check_callable(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise _arg_error(name, "a function taking one event (a dict), or None", value)


def _input_shape(value: Any) -> tuple[int, ...] | None:
    """`input_shape` as the compiler takes it: a (C, H, W) sequence, or the CLI's "3x32x32"."""
    if value is None:
        return None
    if isinstance(value, str):
        from nasc.compiler.build_ir import parse_input_shape

        return parse_input_shape(value, "input_shape")
    try:
        return tuple(value)
    except TypeError:
        raise _arg_error("input_shape", 'a tuple (C, H, W) or a string such as "3x32x32"', value) from None


def _common(**named: Any) -> None:
    """The checks every function shares, by argument name."""
    for name, value in named.items():
        if name in ("params", "relax_options", "select_options"):
            _check_mapping(name, value)
        elif name in ("relax", "select", "data", "device"):
            _check_str(name, value)
        elif name in ("data_dir", "run_dir", "checkpoint", "output"):
            _check_path(name, value, optional=True)
        elif name in ("epochs", "batch", "seed"):
            _check_int(name, value)
        elif name == "on_event":
            _check_callable(name, value)
        else:  # pragma: no cover - a typo in a call below
            raise AssertionError(name)


def _ctx():
    from nasc.catalog import relaxation_names, selector_names
    from nasc.compiler.pipeline import PassContext

    return PassContext(relaxations=relaxation_names(), selectors=selector_names())


def _shape(data: str | None, data_dir: str | None, input_shape: Sequence[int] | None,
           params: dict[str, Any], declared: Sequence[str]) -> tuple[tuple[int, int, int] | None, dict[str, Any]]:
    """Input shape (and `classes`) from a dataset when one is named, as `nasc search`/`train` compile."""
    if data is None:
        return (tuple(input_shape) if input_shape is not None else None), params
    from nasc.runtime.data import load_dataset

    dataset = load_dataset(data, data_dir)
    if "classes" in declared and "classes" not in params:
        params = {**params, "classes": dataset.classes}
    return (tuple(input_shape) if input_shape is not None else dataset.shape), params


@contextmanager
def _torch_flags() -> Iterator[None]:
    """Give back the process-wide kernel flags a run sets (deterministic algorithms, cuDNN autotuning).

    A run chooses them for itself (`seed_everything`); the CLI's process then ends, but a notebook's goes on,
    and its own code after `nasc.search(...)` would otherwise run with deterministic kernels forced on.
    """
    import torch

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


# ---------------------------------------------------------------- compile and build


def compile_space(space: str | Path = "darts", *, params: Mapping[str, Any] | None = None,
                  input_shape: Sequence[int] | None = None, text: str | None = None,
                  data: str | None = None, data_dir: str | None = None) -> SpaceIR:
    """Compile a `.nas` file, a bundled space name, or `text` (attributed to `space`) to the final IR.

    `input_shape` is (C, H, W); `data` takes it (and `classes`) from a dataset instead, the way
    `nasc search` compiles for its data.
    """
    from nasc.compiler.pipeline import compile_space as _compile
    from nasc.compiler.resolve import resolve_path, resolve_source

    _check_path("space", space, also=" (a .nas file or a bundled space name)")
    _check_str("text", text, "a str (the .nas source) or None")
    _common(params=params, data=data, data_dir=data_dir)
    input_shape = _input_shape(input_shape)
    _plugins()
    values = dict(params or {})
    if data is not None:
        decl = resolve_source(text, str(space)) if text is not None else resolve_path(space)
        shape, values = _shape(data, data_dir, input_shape, values, list(decl.params))
    else:
        shape = tuple(input_shape) if input_shape is not None else None
    return _compile(space, text=text, params=values, input_shape=shape, ctx=_ctx())


def _ir(space: Any, params: Mapping[str, Any] | None, input_shape: Sequence[int] | None,
        data: str | None = None, data_dir: str | None = None) -> SpaceIR:
    from nasc.compiler.ir import SpaceIR as _SpaceIR

    if isinstance(space, _SpaceIR):
        if params or input_shape or data:
            raise NascError("pass params, input_shape or data with a space name, not with a compiled IR")
        return space
    _check_path("space", space, also=" (a .nas file or a bundled space name) or a compiled SpaceIR")
    return compile_space(space, params=params, input_shape=input_shape, data=data, data_dir=data_dir)


def build_supernet(space: str | Path | SpaceIR = "darts", *, relax: str | None = None,
                   relax_options: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
                   input_shape: Sequence[int] | None = None, seed: int = 0) -> Network:
    """The supernet of a space (name, file or compiled IR) under a relaxation (default: the space's own).

    `seed` fixes its weights and α: the same seed gives the same supernet, the one a search with
    that seed starts from.

    `net(x)` runs it; `net.arch_parameters()` and `net.weight_parameters()` are the two
    parameter groups; `net.alphas` holds α by group.
    """
    import torch

    from nasc.runtime.relaxations.base import load_relaxation
    from nasc.runtime.supernet import build_supernet as _build

    _common(relax=relax, relax_options=relax_options, params=params, seed=seed)
    if seed is None:
        raise _arg_error("seed", "an int", seed)
    ir = _ir(space, params, input_shape)
    name = relax or ir.relax.name
    options = dict(ir.relax.options) if name == ir.relax.name else {}
    options.update(relax_options or {})
    relaxation = load_relaxation(name, options)
    with torch.random.fork_rng(devices=[]):  # seeds the weights as a search does, leaving the caller's RNG as it was
        torch.manual_seed(seed)
        net = _build(ir, relaxation, generator=torch.Generator().manual_seed(seed))
        relaxation.setup(ir, net)
    return net


def load_genotype(source: Genotype | SearchResult | str | Path) -> Genotype:
    """A genotype from a file, a run directory, a `SearchResult`, or DARTS / NAS-Bench-201 / JSON text."""
    from nasc.compiler import genotype as G

    if isinstance(source, G.Genotype):
        return source
    if hasattr(source, "genotype") and hasattr(source, "run_dir"):  # a SearchResult
        return source.genotype
    return G.read_source(str(source))[0]


def build_network(space: str | Path | SpaceIR, genotype: Genotype | SearchResult | str | Path, *,
                  params: Mapping[str, Any] | None = None, input_shape: Sequence[int] | None = None,
                  data: str | None = None, data_dir: str | None = None) -> Network:
    """The network a genotype derives from a space (every choice made, BN affine), in eval mode.

    Compile for a dataset with `data="digits"` (input shape and classes), or give `input_shape`.
    """
    from nasc.runtime.export import derived_network

    ir = _ir(space, params, input_shape, data, data_dir)
    return derived_network(ir, load_genotype(genotype))[1]


# ---------------------------------------------------------------- search and select


def _warn(notes: Sequence[str]) -> None:
    """What the CLI prints as `warning:` lines before a run (α never trained, cutout capped, the auxiliary
    head dropped) as Python warnings: a notebook would otherwise never hear of them."""
    import warnings

    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=3)


def _overrides(settings: Mapping[str, Any], **named: Any) -> dict[str, Any]:
    out = {k: v for k, v in named.items() if v is not None}
    out.update(settings)
    return out


def search(space: str | Path = "darts", *, params: Mapping[str, Any] | None = None, relax: str | None = None,
           relax_options: Mapping[str, Any] | None = None, select: str | None = None,
           select_options: Mapping[str, Any] | None = None, epochs: int | None = None, batch: int | None = None,
           seed: int | None = None, data: str | None = None, data_dir: str | None = None,
           device: str | None = None, run_dir: str | Path | None = None,
           on_event: Callable[[Event], None] | None = None, **settings: Any) -> SearchResult:
    """Search a space and return its `SearchResult` (`.genotype`, `.run_dir`, `.final` metrics).

    Keyword arguments mirror `nasc search`: `relax="gdas"`, `epochs=2`, `data="digits"`,
    and any search setting by name (`lr=0.05`, `train_portion=0.2`, `memory="recompute"`),
    as `--opt NAME=VALUE` would. The run directory (default runs/SPACE-TIME-sSEED) holds
    config.json, metrics.jsonl, the checkpoint and genotype.json, as the CLI writes them.
    `on_event` receives every progress event (dicts with "type": start/step/epoch/end).
    """
    from nasc.runtime import search as S

    _check_path("space", space, also=" (a .nas file or a bundled space name)")
    _common(params=params, relax=relax, relax_options=relax_options, select=select, select_options=select_options,
            epochs=epochs, batch=batch, seed=seed, data=data, data_dir=data_dir, device=device, run_dir=run_dir,
            on_event=on_event)
    _plugins()
    overrides = _overrides(settings, epochs=epochs, batch=batch, seed=seed, dataset=data, data_dir=data_dir,
                           device=device)
    request = S.Request(space=str(space), params=dict(params or {}), relax=relax,
                        relax_options=dict(relax_options or {}), select=select,
                        select_options=dict(select_options or {}), overrides=overrides)
    with _torch_flags():
        job = S.prepare(request)
        _warn(job.notes)
        target = run_dir if run_dir is not None else S.default_run_dir(job.ir.name, job.config.seed)
        return S.run_search(job, target, on_event=on_event)


def resume(run_dir: str | Path, *, on_event: Callable[[Event], None] | None = None) -> SearchResult | TrainResult:
    """Continue an interrupted search (a `SearchResult`) or training (a `TrainResult`) from its last checkpoint."""
    from nasc.runtime import distributed as _dist
    from nasc.runtime import search as S
    from nasc.runtime import train as T

    _check_path("run_dir", run_dir, also=" (a search or training run directory)")
    _common(on_event=on_event)
    _plugins()
    with _torch_flags():
        if _run_kind(Path(run_dir)) != "train":
            return S.resume(run_dir, on_event=on_event)
        with _dist.run_dir(run_dir).writing():  # locked before reading the checkpoint, as in T.resume_train
            job, state = T.prepare_resume_train(run_dir)
            return _train_result(job, run_dir, T.run_train(job, run_dir, on_event=on_event, resume_state=state))


def select(run: str | Path | SearchResult, selector: str = "perturbation", *,
           on_event: Callable[[Event], None] | None = None, **options: Any) -> Genotype:
    """Derive a genotype again from a search run's last checkpoint with another selector.

    Options are the selector's (`nasc selectors` lists them), e.g.
    `nasc.select(run, "perturbation", tune_epochs=0)`. The genotype is also written
    to the run directory as genotype-SELECTOR.json.
    """
    from nasc.runtime import search as S

    run_dir = getattr(run, "run_dir", run)
    _check_path("run", run_dir, also=" (a search run directory) or a SearchResult")
    _check_str("selector", selector, "a selector name (a str)")
    _common(on_event=on_event)
    _plugins()
    with _torch_flags():
        genotype, _ = S.reselect(run_dir, selector, options, on_event=on_event)
    return genotype


# ---------------------------------------------------------------- train, draw, export


@attrs.frozen(kw_only=True)
class TrainResult:
    """A finished training run: its directory, test metrics, size, and the trained network."""

    run_dir: Path
    test_acc: float | None  # None for a dataset without a test split
    test_top5: float | None  # top-5 accuracy; None with 5 classes or fewer
    test_loss: float | None
    params: int  # weights, without the auxiliary head
    madds: int  # multiply-adds per sample
    epochs: int
    net: Any = attrs.field(repr=False)  # the trained Network
    ir: Any = attrs.field(repr=False)  # the derived network's IR
    genotype: Any = attrs.field(repr=False)


def _genotype_source(genotype: Genotype | SearchResult | str | Path) -> str:
    """What `TrainRequest` reads: a run directory keeps the run's space file, a Genotype goes as JSON."""
    from nasc.compiler import genotype as G

    if isinstance(genotype, G.Genotype):
        return json.dumps(G.to_json(genotype))
    if hasattr(genotype, "run_dir"):
        return str(genotype.run_dir)
    return str(genotype)


def train(genotype: Genotype | SearchResult | str | Path, *, space: str | Path | None = None,
          params: Mapping[str, Any] | None = None, epochs: int | None = None, batch: int | None = None,
          seed: int | None = None, data: str | None = None, data_dir: str | None = None,
          device: str | None = None, run_dir: str | Path | None = None,
          on_event: Callable[[Event], None] | None = None, **settings: Any) -> TrainResult:
    """Train the network a genotype derives, from scratch, and return a `TrainResult`.

    `genotype` may be a `SearchResult` or run directory (its space is found there), a
    Genotype, a genotype file or string (then give `space`). The protocol comes from the
    space's `train:` block, then these arguments; `params` override space parameters
    (e.g. a smaller `C` for a quick try), other settings go by name (`lr=0.05`, `drop_path=0.1`).
    """
    from nasc.runtime import train as T

    _check_path("space", space, optional=True, also=" (a .nas file or a bundled space name)")
    _common(params=params, epochs=epochs, batch=batch, seed=seed, data=data, data_dir=data_dir, device=device,
            run_dir=run_dir, on_event=on_event)
    _plugins()
    overrides = _overrides(settings, epochs=epochs, batch=batch, seed=seed, dataset=data, data_dir=data_dir,
                           device=device)
    request = T.TrainRequest(genotype=_genotype_source(genotype), space=None if space is None else str(space),
                             params=dict(params or {}), overrides=overrides)
    with _torch_flags():
        job = T.prepare_train(request)
        _warn(job.ir.meta.get("warnings", []))
        target = run_dir if run_dir is not None else T.default_train_dir(job.ir.name, job.config.seed)
        result = T.run_train(job, target, on_event=on_event)
    return _train_result(job, target, result)


def _train_result(job: Any, target: str | Path, result: Mapping[str, Any]) -> TrainResult:
    return TrainResult(run_dir=Path(target), test_acc=result["test_acc"], test_top5=result["test_top5"],
                       test_loss=result["test_loss"],
                       params=result["params"], madds=result["madds"], epochs=result["epochs"], net=job.net,
                       ir=job.ir, genotype=job.genotype)


def viz(source: Genotype | SearchResult | str | Path, output: str | Path = "genotype.png") -> list[Path]:
    """Draw a genotype's cells (.png, .svg, .pdf or .dot); for a search run also how α evolved.

    Returns the files written: the drawing, and for a search run its α plot (`OUTPUT_alpha.EXT`).
    """
    from nasc.runtime import viz as V

    _check_path("output", output, also=" (the drawing's file: .png, .svg, .pdf or .dot)")
    g = load_genotype(source)
    out = V.check_format(output)
    written = [V.draw_genotype(g, out)]
    run = _run_dir(source)
    records = V.read_epochs(run) if run is not None and (run / "metrics.jsonl").is_file() else []
    if V.has_alpha(records):  # a training run has none
        written.append(V.draw_alpha(records, V.alpha_path(out)))
    return written


def _run_kind(run: Path) -> str | None:
    """"train" or "search" for a run directory (None without a readable config.json)."""
    try:
        return json.loads((run / "config.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _run_config(run: Path) -> dict[str, Any] | None:
    """A search run's config.json (with the space it searched), else None."""
    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and config.get("space") else None


def _run_dir(source: Any) -> Path | None:
    """The run directory a source names (a SearchResult's, or an existing directory), else None."""
    if hasattr(source, "run_dir"):
        return Path(source.run_dir)
    if isinstance(source, (str, Path)):
        try:
            return Path(source) if Path(source).is_dir() else None
        except (OSError, ValueError):  # a genotype string too long (or odd) to be a path
            return None
    return None


def export(source: TrainResult | Genotype | SearchResult | str | Path, output: str | Path | None = None, *,
           to: str = "pytorch", space: str | Path | None = None, params: Mapping[str, Any] | None = None,
           input_shape: Sequence[int] | None = None, data: str | None = None,
           checkpoint: str | Path | None = None) -> list[Path]:
    """Export a derived network as standalone PyTorch code (`to="pytorch"`), TorchScript or ONNX.

    A `TrainResult` or training run directory exports the trained network with its weights
    (`space`, `params`, `input_shape` and `checkpoint` override what the run recorded); a
    genotype, `SearchResult` or search run directory is compiled in `space` (default: the search
    run's space, else the one the genotype names) as `nasc train` builds it: the `train:` parameters,
    then `params`, for the searched data (or `data`, `input_shape`), with weights from `checkpoint`.
    Returns the files written. A plugin op with a module class of its own has no standalone source:
    export it to TorchScript or ONNX.
    """
    from nasc.runtime import export as X
    from nasc.runtime import train as T

    _check_path("space", space, optional=True, also=" (a .nas file or a bundled space name)")
    _common(output=output, params=params, data=data, checkpoint=checkpoint)
    input_shape = _input_shape(input_shape)
    if to not in X.FORMATS:
        raise NascError(f"unknown export format {to!r}", hint=f"one of {', '.join(X.FORMATS)}")
    run = _run_dir(source) if not isinstance(source, TrainResult) else None
    if isinstance(source, TrainResult):
        given = [k for k, v in (("space", space), ("params", params), ("input_shape", input_shape), ("data", data),
                                ("checkpoint", checkpoint)) if v is not None]
        if given:  # the trained network is exported as it is; these would be silently ignored
            raise NascError(f"export: {given[0]} cannot change a TrainResult's trained network",
                            hint=f"export its run directory instead: nasc.export(result.run_dir, ..., {given[0]}=...)")
        ir, net, genotype, with_weights = source.ir, source.net.eval(), source.genotype, True
    elif run is not None and _run_kind(run) == "train":
        trained = T.load_trained(run, space=None if space is None else str(space), params=params,
                                 input_shape=None if input_shape is None else tuple(input_shape),
                                 checkpoint=checkpoint)
        ir, net, genotype, with_weights = trained.ir, trained.net, trained.genotype, True
    else:
        from nasc.plugins import resuming_with

        genotype = load_genotype(source)
        # a search run (or SearchResult) knows its space, a genotype file usually names it: as `nasc export` does
        config = _run_config(run) if run is not None else None
        space = space if space is not None else T.run_space(config) if config else genotype.space
        if space is None:
            raise NascError("export: give the space the genotype belongs to (space=...)")

        def build():  # the network `nasc train` builds: the `train:` parameters, for the searched data (or `data`)
            values, shape = T.train_params(str(space), None if data else config, dict(params or {}), input_shape)
            return X.derived_network(_ir(space, values, shape, data), genotype)

        ir, net = resuming_with((config or {}).get("plugins") or [], build)  # the plugins a search run recorded
        with_weights = checkpoint is not None
        if checkpoint is not None:
            X.load_weights(net, checkpoint)
    suffix = ".torchscript.pt" if to == "torchscript" else X.SUFFIX[to]
    out = Path(output) if output is not None else Path(f"{ir.name}_net{suffix}")
    return X.export(ir, net, out, to=to, genotype=genotype, with_weights=with_weights)
