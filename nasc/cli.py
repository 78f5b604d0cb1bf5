"""The `nasc` command line: the only code that prints or exits.

Every command is a thin layer over the library. A `NascError` is rendered
with its source context and exits 1; command-line misuse exits 2 (typer);
anything unexpected is reported in one line (set NASC_DEBUG=1 for the
traceback) — a user never sees a raw traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from nasc import __version__
from nasc.atomic import write_text_atomic
from nasc.errors import NascError

app = typer.Typer(
    name="nasc",
    help="A compiler for differentiable neural-architecture-search spaces.",
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
genotype_app = typer.Typer(help="Read, show and convert genotypes.", no_args_is_help=True)
app.add_typer(genotype_app, name="genotype")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def fail(error: NascError, *, shared: bool = False) -> None:
    """Print the error and exit 1. `shared`: every rank of a distributed run meets it alike (a setting,
    refused before the ranks do anything of their own), so rank 0 alone prints it, once."""
    from nasc.report import error_text

    if not ((shared or error.every_rank) and console.quiet):  # console.quiet: a rank other than 0 (_distributed_entry)
        err_console.print(error_text(error.render()))
    raise typer.Exit(code=1)


def warn(text: str) -> None:
    """A warning about the settings: the same on every rank, so rank 0 alone prints it."""
    if not console.quiet:
        err_console.print(f"[yellow]warning:[/yellow] {text}")


def parse_value(text: str, where: str = "value") -> Any:
    """A command-line value: int, float, true/false, a tuple or list, or a string.

    A value in ( ) or [ ] is read as in a `.nas` file (`arch_betas=(0.5, 0.999)`,
    `stages=[stage(layers = 5, keep = 8)]`), with bare names in it taken as text
    (`free_ops=[none, skip_connect]`): kept as a string, no setting could take a tuple or list.
    """
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text[:1] in ("(", "["):
        return _parse_collection(text, where)
    return text


def _parse_collection(text: str, where: str) -> Any:
    import attrs

    from nasc.compiler.expr import evaluate
    from nasc.grammar import ast as A
    from nasc.grammar.parser import parse_expr

    def names(node: Any) -> set[str]:
        if isinstance(node, A.Name):
            return {node.id}
        if isinstance(node, tuple):
            return set().union(*map(names, node))
        if attrs.has(type(node)):
            return set().union(*(names(getattr(node, f.name)) for f in attrs.fields(type(node))))
        return set()

    try:
        expr = parse_expr(text, where)
        return evaluate(expr, {n: n for n in names(expr)})
    except NascError as e:
        col = f" (column {e.span.col})" if e.span and e.span.col > 1 else ""
        raise typer.BadParameter(f"{where}: {e.message}{col}" + (f"; {e.hint}" if e.hint else "")) from None


def parse_assignments(items: list[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"{what} must look like NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_param(value.strip(), f"{what} {item}") if what == "--set" else \
            parse_value(value.strip(), f"{what} {item}")
    return out


def parse_param(text: str, where: str) -> Any:
    """A space parameter's value, read like the value of a parameter in a `.nas` header (`[0, 9]`, `2 * 8`)."""
    from nasc.compiler.expr import evaluate
    from nasc.grammar.parser import parse_expr

    try:
        return evaluate(parse_expr(text, where), {})
    except NascError as e:
        hint = e.hint or ""
        if e.message.startswith("unknown name"):
            hint = 'a text value is written in double quotes, e.g. --set name=\'"text"\''
        col = f" (column {e.span.col})" if e.span and e.span.col > 1 else ""
        raise typer.BadParameter(f"{where}: {e.message}{col}" + (f"; {hint}" if hint else "")) from None


def parse_shape(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    from nasc.compiler.build_ir import parse_input_shape

    try:
        return parse_input_shape(text, "--input")
    except NascError as e:
        raise typer.BadParameter(f"{e.message}; {e.hint}" if e.hint else e.message) from None


def version_callback(value: bool) -> None:
    if value:
        console.print(f"nasc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=version_callback, is_eager=True,
                                                    help="Show the version and exit.")] = None,
    plugin: Annotated[Optional[list[str]], typer.Option(
        "--plugin", metavar="FILE.py|MODULE",
        help="Load a plugin first: a .py file or module that registers ops, relaxations, selectors, "
             "schedules or datasets (repeatable). Installed plugins (entry points) load by themselves."
    )] = None,
) -> None:
    """nasc: write a search space as a `.nas` file, compile it, search it, train the result."""
    from nasc.plugins import load_plugins

    for record in load_plugins(plugin or []):
        if record.error is not None:
            err_console.print(f"[yellow]{_escape(record.error.render())}[/yellow]")
            if os.environ.get("NASC_DEBUG") == "1" and record.error.__cause__ is not None:
                import traceback

                traceback.print_exception(record.error.__cause__)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-p", help="Override a space parameter: NAME=VALUE.")]


def _ctx():
    from nasc.catalog import relaxation_names, selector_names
    from nasc.compiler.pipeline import PassContext

    return PassContext(relaxations=relaxation_names(), selectors=selector_names())


@app.command("compile")
def compile_cmd(
    file: Annotated[str, typer.Argument(help="A .nas file (or the name of a bundled space).")],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Where to write the IR JSON "
                                                  "(default: SPACE.ir.json here; '-' for stdout).")] = None,
    set_: SetOpt = None,
    input_shape: Annotated[Optional[str], typer.Option("--input", help="Input shape CxHxW, e.g. 1x28x28.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Check a space, summarise it and write its IR as JSON."""
    from nasc.compiler.ir import to_json_dict
    from nasc.compiler.pipeline import compile_space
    from nasc.compiler.summary import summarise
    from nasc.report import compile_summary
    from nasc.runtime.config import check_space_settings

    params = parse_assignments(set_, "--set")
    try:
        ir = compile_space(file, params=params, input_shape=parse_shape(input_shape), ctx=_ctx())
        check_space_settings(ir)
    except NascError as e:
        fail(e)
    for w in ir.meta.get("warnings", []):  # e.g. an auxiliary head too big for the input, dropped: said, as search does
        warn(_escape(w))
    summary = summarise(ir)
    data = json.dumps(to_json_dict(ir), indent=1, sort_keys=True)
    target = output or f"{ir.name}.ir.json"
    if target == "-":
        sys.stdout.write(data + "\n")
        return
    try:
        write_text_atomic(_output(target), data + "\n")
    except OSError as e:
        fail(NascError(f"cannot write {target}: {e.strerror or e}"))
    except NascError as e:
        fail(e)
    if as_json:
        digits = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)  # a large cell's architecture count may have more than the 4,300 allowed
        try:
            sys.stdout.write(json.dumps(summary, indent=1) + "\n")
        finally:
            sys.set_int_max_str_digits(digits)
    else:
        console.print(compile_summary(summary, files=[_short(f) for f in ir.files], out=target))


def _output(path: str | Path) -> Path:
    """An output file's path, its missing folders made (`-o runs/se.ir.json` in a fresh folder)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NascError(f"cannot create the folder {path.parent}: {e.strerror or e}") from None
    return path


def _short(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return Path(path).name if "nasc/spaces" in path or "/spaces/" in path else path


@app.command()
def check(
    files: Annotated[list[str], typer.Argument(help="One or more .nas files.")],
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
) -> None:
    """Validate .nas files: exit 0 when all are valid, 1 when any is not."""
    from nasc.compiler.pipeline import compile_space
    from nasc.report import error_text
    from nasc.runtime.config import check_space_settings

    params = parse_assignments(set_, "--set")
    failed = 0
    ctx = _ctx()
    for f in files:
        try:
            check_space_settings(compile_space(f, params=params, ctx=ctx))
        except NascError as e:
            failed += 1
            err_console.print(error_text(e.render()))
            continue
        if not quiet:
            console.print(f"[green]ok[/green] {_escape(f)}")
    if failed:
        raise typer.Exit(code=1)


@app.command()
def spaces() -> None:
    """List the bundled search spaces."""
    from nasc.compiler.resolve import bundled_dir

    table = Table(show_edge=False)
    table.add_column("space", style="bold")
    table.add_column("what it is")
    for path in sorted(bundled_dir().glob("*.nas")):
        table.add_row(path.stem, _header_sentence(path.read_text(encoding="utf-8")))
    console.print(table)
    console.print("[dim]use a name directly (`nasc compile darts`) or copy the file from "
                  f"{bundled_dir()}[/dim]")


def _header_sentence(text: str) -> str:
    """The first sentence of a file's leading comment block (it may span lines)."""
    words = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        words.append(line[1:].strip())
    header = " ".join(w for w in words if w)
    end = next((i for i in range(len(header)) if header[i] == "." and header[i + 1:i + 2] in (" ", "")), None)
    return header[:end + 1] if end is not None else header


@app.command()
def ops(
    space: Annotated[Optional[str], typer.Argument(help="Also list the ops a space defines.")] = None,
) -> None:
    """List the primitives op bodies are built from (and a space's own ops)."""
    from nasc.compiler.primitives import PRIMITIVES
    from nasc.plugins import origin_of

    table = Table(show_edge=False, title="primitives", title_justify="left")
    table.add_column("primitive", style="bold")
    table.add_column("parameters")
    table.add_column("what it is")
    table.add_column("origin", style="dim")
    for name, p in sorted(PRIMITIVES.items()):
        params = ", ".join(q.name + ("" if q.required else f"={_default(q.default)}") for q in p.params)
        table.add_row(name, params, _escape(p.doc), _escape(origin_of("primitive", name)))
    console.print(table)
    if space:
        from nasc.compiler.resolve import resolve_path

        try:
            decl = resolve_path(space)
        except NascError as e:
            fail(e)
        t = Table(show_edge=False, title=f"ops of {decl.name}", title_justify="left")
        t.add_column("op", style="bold")
        t.add_column("defined at")
        for name, d in sorted({**decl.ops, **decl.patterns}.items()):
            t.add_row(name, _escape(f"{_short(d.span.file)}:{d.span.line}"))
        for name, d in sorted(decl.op_sets.items()):
            t.add_row(f"{name} (set)", _escape(f"{_short(d.span.file)}:{d.span.line}"))
        console.print(t)


def _method_table(kind: str, rows: list[dict], *, presets: bool) -> Table:
    """One listing for relaxations and selectors: name, option defaults, doc, origin (and presets)."""
    table = Table(show_edge=False)
    table.add_column(kind, style="bold")
    table.add_column("options (defaults)")
    table.add_column("what it is")
    table.add_column("origin", style="dim")
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], "", f"[red]unavailable[/red]: {_escape(row['error'])}", _escape(row["origin"]))
            continue
        table.add_row(row["name"], _escape(_options(row["defaults"])), _escape(row["doc"]), _escape(row["origin"]))
        for preset, (options, settings) in (row.get("presets", {}).items() if presets else ()):
            what = "preset: " + (_options(options) if options else "default options")
            if settings:
                what += "; search: " + _options(settings)
            table.add_row(f"  {preset}", "", _escape(what), _escape(row["origin"]))
    return table


@app.command("relaxations")
def relaxations_cmd() -> None:
    """List the relaxations (built-in and plugins), their options with defaults, and their method presets."""
    from nasc.plugins import relaxation_rows

    console.print(_method_table("relaxation", relaxation_rows(), presets=True))
    console.print("[dim]use one with `nasc search SPACE --relax NAME` (a preset also sets its search defaults); "
                  "options with --relax-opt NAME=VALUE[/dim]")


@app.command("selectors")
def selectors_cmd() -> None:
    """List the selectors (built-in and plugins) and their options with defaults."""
    from nasc.plugins import selector_rows

    console.print(_method_table("selector", selector_rows(), presets=False))


def _options(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in values.items())


def _value(v: Any) -> str:
    """An option value as one would type it: `10 -> 0.1` for a ramp, `(0.5, 0.999)` for a tuple."""
    from nasc.compiler.expr import Ramp

    if isinstance(v, Ramp):
        return f"{v.start:g} -> {v.end:g}"
    if isinstance(v, dict) and set(v) == {"from", "to"}:
        return f"{v['from']:g} -> {v['to']:g}"
    if isinstance(v, (tuple, list)):
        inner = ", ".join(_value(x) for x in v)
        return f"({inner})" if isinstance(v, tuple) else f"[{inner}]"
    if isinstance(v, float):
        return f"{v:g}"
    return _default(v)




def _interrupted(command: str, run: str | None) -> None:
    """Ctrl-C: say how to go on from the last checkpoint, naming the run (its name may be generated).

    A terminal's Ctrl-C reaches every rank of a distributed run; rank 0 alone says it (console.quiet elsewhere).
    """
    from nasc.runtime.rundir import RunDir

    if console.quiet:
        pass
    elif run is None:
        err_console.print("[yellow]interrupted[/yellow] before the run started")
    elif not RunDir(run).checkpoint.is_file():
        err_console.print(f"[yellow]interrupted[/yellow] before the first checkpoint (written at the end of epoch 1): "
                          f"delete {_escape(run)} or start again with another --run-dir")
    else:
        err_console.print(f"[yellow]interrupted[/yellow]: resume with [bold]nasc {command} --resume {_escape(run)}[/bold]")
    raise typer.Exit(code=130)


def _resume_notes(resume: str | None, command: str, dry_run: bool, given: dict[str, Any]) -> None:
    """`--resume` continues with the run's recorded settings: refuse --dry-run, name the flags it ignores."""
    if not resume:
        return
    if dry_run:
        fail(NascError("--resume starts training again; it cannot be combined with --dry-run",
                       hint=f"the run's settings are in {Path(resume) / 'config.json'}"))
    ignored = [flag for flag, value in given.items() if value not in (None, False, [], {})]
    if ignored:
        warn(f"nasc {command} --resume continues with the run's recorded settings; ignored: {', '.join(ignored)}")


def _distributed_entry(nproc: int | None, dry_run: bool) -> None:
    """Start `nproc` workers (and exit with their status), or join torchrun's group when launched by it."""
    from nasc.runtime import distributed as D

    try:
        code = D.cli_entry(nproc, console, launch_ok=not dry_run)
    except NascError as e:
        fail(e)
    if code is not None:
        raise typer.Exit(code=code)


@app.command()
def search(
    space: Annotated[str, typer.Argument(help="A .nas file or bundled space name.")] = "darts",
    relax: Annotated[Optional[str], typer.Option("--relax", help="Relaxation or method preset "
                                                 "(overrides the file), e.g. darts.")] = None,
    relax_opt: Annotated[Optional[list[str]], typer.Option("--relax-opt", help="Relaxation option NAME=VALUE.")] = None,
    select: Annotated[Optional[str], typer.Option("--select", help="Selector (overrides the file).")] = None,
    select_opt: Annotated[Optional[list[str]], typer.Option("--select-opt", help="Selector option NAME=VALUE "
                                                            "(`nasc selectors` lists them; perturbation: "
                                                            "tune_epochs=0 and eval_batches=N shorten it).")] = None,
    set_: SetOpt = None,
    epochs: Annotated[Optional[int], typer.Option(help="Search epochs.")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Batch size.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    second_order: Annotated[bool, typer.Option("--second-order", help="Unrolled (second-order) DARTS.")] = False,
    first_order: Annotated[bool, typer.Option("--first-order", help="First-order α gradient.")] = False,
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset: digits (default, embedded), "
                                                "cifar10, cifar100, mnist, fashion_mnist.")] = None,
    data_dir: Annotated[Optional[str], typer.Option(
        "--data-dir", help="Where datasets live (default: $NASC_DATA, else ~/.cache/nasc/data).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda.")] = None,
    memory: Annotated[Optional[str], typer.Option(help="Supernet memory mode: plain, recompute or auto.")] = None,
    opt: Annotated[Optional[list[str]], typer.Option("--opt", help="Any search setting NAME=VALUE "
                                                     "(lr, lr_min, arch_lr, arch_start, clip, cutout, ...).")] = None,
    run_dir: Annotated[Optional[str], typer.Option("--run-dir", help="Run directory (default runs/SPACE-TIME-sSEED).")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue the run in this directory.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Build the supernet, show the resolved "
                                          "configuration and memory estimate, and exit.")] = False,
    nproc: Annotated[Optional[int], typer.Option("--nproc", help="Run on N processes on this machine "
                                                 "(torch.distributed; --batch stays the global batch).")] = None,
) -> None:
    """Search a space (the bundled DARTS space by default) and write a genotype."""
    from nasc.compiler import genotype as G
    from nasc.progress import SearchDisplay
    from nasc.report import human
    from nasc.runtime import search as S

    if second_order and first_order:
        raise typer.BadParameter("--first-order and --second-order exclude each other")
    # parsed before --nproc starts the workers: a malformed value is reported once, not once per rank
    overrides = parse_assignments(opt, "--opt")
    params, relax_options = parse_assignments(set_, "--set"), parse_assignments(relax_opt, "--relax-opt")
    select_options = parse_assignments(select_opt, "--select-opt")
    _distributed_entry(nproc, dry_run)
    _resume_notes(resume, "search", dry_run, {
        "SPACE": space if space != "darts" else None, "--relax": relax, "--relax-opt": relax_opt, "--select": select,
        "--select-opt": select_opt, "--set": set_, "--epochs": epochs, "--batch": batch, "--seed": seed,
        "--second-order": second_order, "--first-order": first_order, "--data": data, "--data-dir": data_dir,
        "--device": device, "--memory": memory, "--opt": opt, "--run-dir": run_dir})
    for key, value in (("epochs", epochs), ("batch", batch), ("seed", seed), ("dataset", data),
                       ("data_dir", data_dir), ("device", device), ("memory", memory)):
        if value is not None:
            overrides[key] = value
    if second_order:
        overrides["order"] = 2
    if first_order:
        overrides["order"] = 1
    display = SearchDisplay(console)
    target = resume  # the run a Ctrl-C message names
    try:
        if resume:
            with display:
                result = S.resume(resume, on_event=display)
        else:
            request = S.Request(space=space, params=params, relax=relax, relax_options=relax_options,
                                select=select, select_options=select_options, overrides=overrides)
            try:
                job = S.prepare(request)
            except NascError as e:
                fail(e, shared=True)
            for w in job.notes:
                warn(_escape(w))
            info = S.describe(job)
            if dry_run:
                _print_dry_run(info, human)
                return
            target = run_dir or str(S.default_run_dir(job.ir.name, job.config.seed))
            with display:
                result = S.run_search(job, target, on_event=display)
    except NascError as e:
        fail(e)
    except KeyboardInterrupt:
        _interrupted("search", target)
    console.print(display.summary())
    console.print(f"[bold green]genotype[/bold green] (written to "
                  f"{_escape(str(result.run_dir / 'genotype.json'))}):")
    console.print(G.to_text(result.genotype), soft_wrap=True)


def _print_dry_run(info: dict[str, Any], human) -> None:
    from nasc.report import value_grid

    table = value_grid()
    table.add_row("space", f"{info['space']} ({info['space_file']})")
    table.add_row("fingerprint", info["fingerprint"])
    table.add_row("input", " x ".join(str(d) for d in info["input"]))
    table.add_row("supernet" + (" (stage 0)" if info.get("stage_plan") else ""), f"{info['supernet_weights']:,} weights, {info['arch_parameters']:,} architecture parameters")
    table.add_row("activations", f"~{human(info['activation_bytes_estimate'], 'B')} kept by one forward at batch "
                                 f"{info['search']['batch']} with the plain lowering (compiler estimate)")
    table.add_row("relaxation", f"{info['relax']['name']} {info['relax']['options'] or ''}")
    table.add_row("selector", f"{info['select']['name']} {info['select']['options'] or ''}")
    table.add_row("device", info["device"])
    if info.get("memory"):
        table.add_row("memory", info["memory"]["reason"])
    if info.get("cuda_graphs"):
        graphs = info["cuda_graphs"]
        table.add_row("CUDA graphs", ("used: " if graphs["used"] else "off: ") + graphs["reason"])
    if info.get("fuse_edges"):
        table.add_row("fused edges", info["fuse_edges"]["reason"])
    if info.get("torch_compile"):
        table.add_row("torch.compile", info["torch_compile"]["reason"])
    for row in info.get("stage_plan") or ():  # progressive search: what every stage will search
        (w_lo, w_hi), (a_lo, a_hi) = row["supernet_weights"], row["activation_bytes_estimate"]
        size = (f"{w_lo:,} weights, ~{human(a_lo, 'B')} activations" if (w_lo, a_lo) == (w_hi, a_hi) else
                f"{w_lo:,} to {w_hi:,} weights, ~{human(a_lo, 'B')} to {human(a_hi, 'B')} activations "
                "(as the kept ops decide)")
        table.add_row(f"stage {row['stage']}", f"{', '.join(f'{k} = {v}' for k, v in row['params'].items())}; "
                      f"{row['ops_per_edge']} ops per edge; {row['epochs']} epochs (α from epoch {row['arch_start']}); "
                      f"skip dropout {row['skip_dropout']}; {size}")
    for key, value in info["search"].items():
        table.add_row(f"  {key}", str(value))
    console.print(table)


@app.command()
def train(
    genotype: Annotated[Optional[str], typer.Argument(help="A genotype file (FILE:NAME for one of an official "
                                                      "genotypes.py), run directory, DARTS Genotype(...) or "
                                                      "NAS-Bench-201 string (none with --resume).")] = None,
    space: Annotated[Optional[str], typer.Option("--space", help="The space the genotype belongs to "
                                                 "(default: from the genotype or run).")] = None,
    set_: SetOpt = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs.")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Batch size.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset (default: a search run's, else the "
                                                "embedded digits).")] = None,
    data_dir: Annotated[Optional[str], typer.Option(
        "--data-dir", help="Where datasets live (default: $NASC_DATA, else ~/.cache/nasc/data).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda.")] = None,
    opt: Annotated[Optional[list[str]], typer.Option("--opt", help="Any training setting NAME=VALUE "
                                                     "(lr, drop_path, aux_weight, cutout, ...).")] = None,
    run_dir: Annotated[Optional[str], typer.Option("--run-dir", help="Run directory.")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue the training run in this directory.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show parameters, multiply-adds and settings, then exit.")] = False,
    input_shape: Annotated[Optional[str], typer.Option("--input", help="With --dry-run: count for this input "
                                                       "shape CxHxW (e.g. 3x32x32 for CIFAR).")] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", help="Run on N processes on this machine "
                                                 "(torch.distributed; --batch stays the global batch).")] = None,
) -> None:
    """Train a derived architecture from scratch (DARTS protocol by default, from the space's `train:` block)."""
    from nasc.progress import SearchDisplay
    from nasc.runtime import train as T

    if genotype is None and not resume:
        # optional only so that `nasc train --resume RUN`, the command a Ctrl-C names, needs no genotype
        raise typer.BadParameter("a genotype is required (a file, run directory or genotype string), "
                                 "unless --resume RUN_DIR continues a training run")
    overrides = parse_assignments(opt, "--opt")  # before --nproc starts the workers, as in `search`
    params = parse_assignments(set_, "--set")
    _distributed_entry(nproc, dry_run)
    _resume_notes(resume, "train", dry_run, {
        "GENOTYPE": genotype, "--space": space, "--set": set_, "--epochs": epochs, "--batch": batch, "--seed": seed,
        "--data": data, "--data-dir": data_dir, "--device": device, "--opt": opt, "--run-dir": run_dir,
        "--input": input_shape})

    for key, value in (("epochs", epochs), ("batch", batch), ("seed", seed), ("dataset", data),
                       ("data_dir", data_dir), ("device", device)):
        if value is not None:
            overrides[key] = value
    display = SearchDisplay(console)
    target = resume  # the run a Ctrl-C message names
    try:
        if resume:
            with display:
                result = T.resume_train(resume, on_event=display)
        else:
            shape = parse_shape(input_shape)
            if shape is not None and not dry_run:
                raise typer.BadParameter("--input only applies to --dry-run (training uses the dataset's shape)")
            try:
                job = T.prepare_train(T.TrainRequest(genotype=genotype, space=space, input_shape=shape,
                                                     params=params, overrides=overrides))
            except NascError as e:
                fail(e, shared=True)
            c = T.counts(job)
            aux = f"; {c['params_with_aux']:,} with the auxiliary head" if T.has_aux(job.ir) else ""
            console.print(f"[bold]network[/bold] {job.ir.name}: {c['params']:,} parameters "
                          f"({c['params'] / 1e6:.2f}M{aux}), {c['madds']:,} multiply-adds per sample")
            for w in job.ir.meta.get("warnings", []):
                console.print(f"[yellow]warning:[/yellow] {_escape(w)}")
            if dry_run:
                if shape is not None:
                    console.print(f"  input = {'x'.join(map(str, shape))}")
                for key, value in T.describe_train(job)["train"].items():
                    if shape is not None and data is None and key in ("dataset", "data_dir"):
                        continue  # counted for --input, not for the default dataset
                    console.print(f"  {key} = {_escape(str(value))}")
                return
            target = run_dir or str(T.default_train_dir(job.ir.name, job.config.seed))
            with display:
                result = T.run_train(job, target, on_event=display)
    except NascError as e:
        fail(e)
    except KeyboardInterrupt:
        _interrupted("train", target)
    console.print(display.summary())
    epochs = f"{result['epochs']} epoch" + ("s" if result["epochs"] != 1 else "")
    top5 = f", top-5 {result['test_top5']:.4f}" if result.get("test_top5") is not None else ""
    if result["test_acc"] is None:
        console.print(f"[bold green]trained[/bold green] {epochs} ({result['params']:,} parameters); the dataset "
                      "has no test split, so there is no test accuracy")
    else:
        console.print(f"[bold green]test accuracy[/bold green] {result['test_acc']:.4f}{top5} after {epochs} "
                      f"({result['params']:,} parameters)")


@app.command("select")
def select_cmd(
    run_dir: Annotated[str, typer.Argument(help="A search run directory (its last checkpoint is used).")],
    select: Annotated[str, typer.Option("--select", help="Selector: magnitude or perturbation.")] = "perturbation",
    select_opt: Annotated[Optional[list[str]], typer.Option("--select-opt", help="Selector option NAME=VALUE "
                                                            "(perturbation: tune_epochs, crit, eval_batches, seed; tune_epochs=0 "
                                                            "and eval_batches=N shorten it).")] = None,
) -> None:
    """Derive a genotype again from a finished (or interrupted) search, without searching again."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nasc.compiler import genotype as G
    from nasc.progress import SelectionDisplay
    from nasc.runtime import search as S

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console)
    try:
        with progress:
            genotype, path = S.reselect(run_dir, select, parse_assignments(select_opt, "--select-opt"),
                                        on_event=SelectionDisplay(console, progress))
    except NascError as e:
        fail(e)
    console.print(f"[bold green]genotype[/bold green] ({_escape(select)}) written to {_escape(str(path))}:")
    console.print(G.to_text(genotype), soft_wrap=True)


@genotype_app.command("convert")
def genotype_convert(
    source: Annotated[str, typer.Argument(help="A genotype file (JSON or text) or a genotype string.")],
    to: Annotated[str, typer.Option("--to", help="json, darts or nb201.")] = "json",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Convert between genotype JSON, DARTS `Genotype(...)` notation and NAS-Bench-201 strings."""
    from nasc.compiler import genotype as G

    try:
        g = _read_genotype(source)
        if to == "json":
            text = json.dumps(G.to_json(g), indent=1)
        elif to == "darts":
            text = G.to_darts(g)
        elif to == "nb201":
            text = G.to_nb201(g)
        else:
            raise typer.BadParameter(f"--to must be json, darts or nb201, not {to!r}")
    except NascError as e:
        fail(e)
    if output:
        try:
            write_text_atomic(_output(output), text + "\n")
        except OSError as e:
            fail(NascError(f"cannot write {output}: {e.strerror or e}"))
        except NascError as e:
            fail(e)
    else:
        sys.stdout.write(text + "\n")


@genotype_app.command("show")
def genotype_show(source: Annotated[str, typer.Argument(help="A genotype file, string, or run directory.")]) -> None:
    """Print a genotype cell by cell."""

    try:
        g = _read_genotype(source)
    except NascError as e:
        fail(e)
    for name, cell in g.cells.items():
        # cell, layer and op names come from the file as written: '[/x]' is text, not rich markup
        console.print(f"[bold]{_escape(name)}[/bold] ({cell.n_inputs} inputs, {cell.n_nodes} nodes, "
                      f"output {list(cell.concat)})")
        for e in cell.edges:
            console.print(f"  {e.input} -> {e.node}: {_escape(e.op)}")
    for layer, op in g.layers:
        console.print(f"  {_escape(layer)}: {_escape(op)}")


def _read_source(source: str):
    """(genotype, run config or None) from a genotype file, string or run directory."""
    from nasc.compiler import genotype as G

    return G.read_source(source)


def _read_genotype(source: str):
    return _read_source(source)[0]


def _check_fits(genotype, space: str, params: dict[str, Any]) -> None:
    """Raise GenotypeError unless the genotype's cells, edges and ops exist in the space."""
    from nasc.compiler.derive import check_fits
    from nasc.compiler.pipeline import compile_space

    check_fits(compile_space(space, params=params, ctx=_ctx()), genotype)


def _run_kind(run: Path) -> str | None:
    """"train" for a training run directory (searches record no kind)."""
    try:
        return json.loads((run / "config.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _run_dir(source: str) -> Path | None:
    try:
        path = Path(source)
        return path if path.is_dir() else None
    except (OSError, ValueError):  # a genotype string too long (or odd) to be a path
        return None


@app.command("viz")
def viz_cmd(
    source: Annotated[str, typer.Argument(help="A genotype file (FILE:NAME for one of a genotypes.py), a DARTS "
                                          "Genotype(...) or NB201 string, or a run directory.")],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Drawing to write: .png, .svg, .pdf "
                                                  "or .dot (default genotype.png; in the run directory for a run).")]
    = None,
    space: Annotated[Optional[str], typer.Option("--space", help="Check the genotype against this space "
                                                 "(.nas file or bundled name) first.")] = None,
    set_: SetOpt = None,
) -> None:
    """Draw a genotype's cells as in the DARTS paper; for a run directory, also how α evolved."""
    from rich.markup import escape

    from nasc.runtime import viz as V

    try:
        g = _read_genotype(source)
        if space:
            _check_fits(g, space, parse_assignments(set_, "--set"))
        run = _run_dir(source)
        out = _output(V.check_format(output or (run / "genotype.png" if run else "genotype.png")))
        for name, cell in g.cells.items():
            console.print(f"[bold]{escape(V.cell_title(name))}[/bold] [dim]({cell.n_inputs} inputs, "
                          f"{cell.n_nodes} nodes)[/dim]")
            for line in V.cell_lines(cell):
                console.print(f"  {escape(line)}")
        if g.layers:
            console.print("[bold]layers[/bold]")
            for layer, op in g.layers:
                console.print(f"  {escape(layer)}: {escape(op)}")
        written = [V.draw_genotype(g, out)]
        records = V.read_epochs(run) if run is not None and (run / "metrics.jsonl").is_file() else []
        if run is not None and V.has_alpha(records):
            changes = V.genotype_changes(records)
            if changes:
                later = [str(epoch) for epoch, _ in changes[1:]]
                console.print(f"genotype: first selected at epoch {changes[0][0]}, "
                              + (f"changed at epoch{'s' if len(later) > 1 else ''} {', '.join(later)}"
                                 if later else "never changed after"))
            written.append(V.draw_alpha(records, V.alpha_path(out)))
        elif run is not None:
            why = ("a training run" if (run / "metrics.jsonl").is_file() and _run_kind(run) == "train"
                   else "its metrics hold no α yet" if (run / "metrics.jsonl").is_file() else "no metrics.jsonl")
            console.print(f"[dim]no α plot for {_escape(str(run))} ({why})[/dim]")
    except NascError as e:
        fail(e)
    for path in written:
        console.print(f"[green]wrote[/green] {_escape(str(path))}")


@app.command("export")
def export_cmd(
    source: Annotated[str, typer.Argument(help="A training run directory (the trained network), a genotype file, "
                                          "a DARTS Genotype(...) or NB201 string, or a search run directory.")],
    space: Annotated[Optional[str], typer.Option("--space", help="The space the genotype belongs to (.nas file or "
                                                 "bundled name; default: the run's, or the genotype's).")] = None,
    to: Annotated[str, typer.Option("--to", help="pytorch (one standalone .py file), torchscript or onnx.")]
    = "pytorch",
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="Weights to export: a state dict "
                                                      "file, or a dict holding one under 'net' (default for a "
                                                      "training run: its weights.pt).")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="File to write (default "
                                                  "SPACE_net.py / .torchscript.pt / .onnx here).")] = None,
    set_: SetOpt = None,
    input_shape: Annotated[Optional[str], typer.Option("--input", help="Input shape CxHxW, e.g. 1x28x28 "
                                                       "(default: a training run's, a search run's data's, "
                                                       "else the space's).")]
    = None,
) -> None:
    """Export the network a genotype derives (a training run's trained one): standalone PyTorch code, TorchScript or ONNX."""
    from nasc.compiler.pipeline import compile_space
    from nasc.plugins import resuming_with
    from nasc.runtime import export as X
    from nasc.runtime import train as T

    if to not in X.FORMATS:
        raise typer.BadParameter(f"--to must be one of {', '.join(X.FORMATS)}, not {to!r}")
    params = parse_assignments(set_, "--set")
    shape = parse_shape(input_shape)
    weights = checkpoint
    try:
        g, config = _read_source(source)
        if config is not None and config.get("kind") == "train":
            # the trained network: the run's space, parameters and input shape (options override them)
            trained = T.load_trained(source, space=space, params=params, input_shape=shape, checkpoint=checkpoint)
            derived, net, g = trained.ir, trained.net, trained.genotype
            weights = _short(str(trained.weights)) + ("" if trained.finished or checkpoint else
                                                      " (the last checkpoint of an unfinished run)")
        else:
            space = space or (T.run_space(config) if config and config.get("space") else g.space)
            if space is None:
                raise NascError("export: which space does this genotype belong to?",
                                hint="pass --space FILE.nas (or a bundled space name such as darts)")
            # the evaluation network, as `nasc train` builds it: the space's `train:` parameters, then --set, for
            # a search run's data; its space may use the plugins it recorded, loaded again as `nasc train RUN` does
            recorded = (config.get("plugins") if isinstance(config, dict) else None) or []

            def build():
                values, for_input = T.train_params(space, config, params, shape)
                return compile_space(space, params=values, input_shape=for_input, ctx=_ctx())

            ir = resuming_with(recorded, build)
            derived, net = X.derived_network(ir, g)
            if checkpoint:
                X.load_weights(net, checkpoint)
        for w in derived.meta.get("warnings", []):
            err_console.print(f"[yellow]warning:[/yellow] {_escape(w)}")
        suffix = ".torchscript.pt" if to == "torchscript" else X.SUFFIX[to]
        out = _output(output or f"{derived.name}_net{suffix}")
        written = X.export(derived, net, out, to=to, genotype=g, with_weights=bool(weights))
    except NascError as e:
        fail(e)
    n_weights = sum(p.numel() for p in net.parameters())
    # the papers' count leaves the auxiliary head out (as `nasc train` reports it); the file holds it too
    n_aux = sum(p.numel() for lid in net.aux_ids for p in net.layers[lid].parameters())
    counted = (f"{n_weights - n_aux:,} weights, {n_weights:,} with the auxiliary head" if n_aux
               else f"{n_weights:,} weights")
    console.print(f"[green]wrote[/green] {_escape(str(written[0]))} ({to}, {counted}, input "
                  f"{'x'.join(map(str, derived.input_shape))}"
                  + (", from " + _escape(str(weights)) if weights else ", untrained") + ")")
    for path in written[1:]:
        console.print(f"[green]wrote[/green] {_escape(str(path))} (its weights)")
    if to == "pytorch":
        console.print("[dim]checked: it loads nasc's state dict strictly and computes the same output; "
                      f"use it with `from {out.stem} import build; net = build()`[/dim]")


def _default(value: Any) -> str:
    return "auto" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def plugins_first(args: list[str]) -> list[str]:
    """`--plugin` is an option of `nasc` itself (it must load before a command reads its space); written
    after the command (`nasc search --plugin x.py ...`), as users do, it is moved in front of it."""
    head, rest, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a == "--":  # everything after it is an argument
            rest += args[i:]
            break
        if a == "--plugin" and i + 1 < len(args):
            head += args[i:i + 2]
            i += 2
            continue
        (head if a.startswith("--plugin=") else rest).append(a)
        i += 1
    return head + rest


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (`kill`, a batch scheduler's time limit) ends a command as Ctrl-C does: with what to do next
    (`--resume RUN`), not silently. Nothing is lost either way: checkpoints and outputs are replaced atomically."""
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point: run the app, turning unexpected failures into one clear line."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        app(args=plugins_first(sys.argv[1:]))
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except SystemExit:
        raise
    except NascError as e:  # raised outside a command's own handling
        from nasc.report import error_text

        err_console.print(error_text(e.render()))
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("NASC_DEBUG") == "1":
            raise
        from nasc.plugins import blame, loaded_plugins
        from nasc.report import error_text

        if "torch.distributed" in sys.modules:  # a collective failed: another rank stopped first, with its error
            from nasc.runtime.distributed import peer_stopped

            stopped = peer_stopped(e)
            if stopped is not None:
                err_console.print(error_text(stopped.render()))
                sys.exit(1)
        blamed = blame(e)  # raised in a loaded plugin's own code: the plugin's error, not nasc's
        if blamed is not None:
            err_console.print(error_text(blamed.render()))
            sys.exit(1)
        # the message may quote user input ('[/x]'), which must not be read as rich markup
        err_console.print(f"[bold red]internal error:[/bold red] {type(e).__name__}: {_escape(str(e))}")
        # a plugin's module can fail inside nasc's own frames (an op whose output disagrees with its
        # channels or spatial rule fails where the cell adds its edges): name the plugins before blaming nasc
        plugins = [r.name for r in loaded_plugins() if r.ok and r.registered]
        if plugins:
            err_console.print(f"[cyan]  hint: plugin {', '.join(plugins)} was loaded; if the error comes from its "
                              "ops or hooks (an op whose output does not match its channels or spatial rule, say), "
                              "fix the plugin, else it is a bug in nasc; NASC_DEBUG=1 shows the traceback[/cyan]")
        else:
            err_console.print("[cyan]  hint: this is a bug in nasc; rerun with NASC_DEBUG=1 for the traceback "
                              "and report it[/cyan]")
        sys.exit(3)
