"""Files → one merged declaration set: follows `import` and `extends`, applies overrides.

`extends "darts.nas"` starts from everything the base declares and lets the
extending file replace any definition by name (ops, op sets, cells) or any
statement (network, alpha, relax, select), add or change parameters and
search settings. `import "x.nas"` brings in only the definitions (ops, op sets,
cells). Paths are relative to the file that names them; a name not found
there is looked up among the bundled spaces, so `extends "darts.nas"` works
from anywhere.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import attrs

from nasc.errors import NasSemanticError, NasSyntaxError, SourceSpan, suggest
from nasc.grammar import ast as A
from nasc.grammar.parser import parse, parse_file


@attrs.define(kw_only=True)
class SpaceDecl:
    """Every declaration in scope for one space, keyed by name; still unevaluated AST."""

    name: str
    path: str
    params: dict[str, A.Param] = attrs.field(factory=dict)
    ops: dict[str, A.OpDef] = attrs.field(factory=dict)
    patterns: dict[str, A.OpDef] = attrs.field(factory=dict)
    op_sets: dict[str, A.OpsDef] = attrs.field(factory=dict)
    cells: dict[str, A.CellDef | A.CellDerive] = attrs.field(factory=dict)
    network: A.Network | None = None
    alpha: A.AlphaStmt | None = None
    relax: A.MethodStmt | None = None
    select: A.MethodStmt | None = None
    search: dict[str, A.Setting] = attrs.field(factory=dict)
    train: dict[str, A.Setting] = attrs.field(factory=dict)
    files: list[str] = attrs.field(factory=list)  # every file read, in order
    # parameters of imported files, which `import` does not bring in: name -> file (for a hint)
    imported_params: dict[str, str] = attrs.field(factory=dict)
    span: SourceSpan | None = None  # the space header of the file compiled (else its first line)
    headed: bool = False  # the compiled file opens with `space ...`; a headless one is a library to import


def bundled_dir() -> Path:
    return Path(str(resources.files("nasc.spaces")))


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte
        return False


def find_file(name: str, relative_to: str | None, span: SourceSpan | None = None) -> Path:
    """Locate `name` next to the naming file, else among the bundled spaces."""
    candidates = []
    if relative_to and relative_to != "<string>":
        candidates.append(Path(relative_to).parent / name)
    candidates.append(Path(name))
    candidates.append(bundled_dir() / name)
    if not name.endswith(".nas"):
        candidates.append(bundled_dir() / f"{name}.nas")
    for path in candidates:
        if _is_file(path):
            return path
    names = sorted(p.name for p in bundled_dir().glob("*.nas"))
    # `nasc search dartz`: name the bundled space meant, as an op or option typo is named (a path is the user's)
    stems = [n.removesuffix(".nas") for n in names]
    best = suggest(name.removesuffix(".nas"), stems) if "/" not in name else None
    hint = f"did you mean {best + name[len(name.removesuffix('.nas')):]!r}? " if best else ""
    raise NasSemanticError(f"cannot find {name!r}", span=span, hint=f"{hint}bundled spaces: {', '.join(names)}")


def _add_definitions(decl: SpaceDecl, stmts: tuple, *, definitions_only: bool, file: str) -> None:
    seen: dict[tuple[str, str], SourceSpan] = {}

    def once(kind: str, name: str, span: SourceSpan) -> None:
        key = (kind, name)
        if key in seen:
            first = seen[key]
            raise NasSemanticError(f"{kind} {name!r} is defined twice in this file", span=span,
                                   hint=f"the first definition is at line {first.line}")
        seen[key] = span

    # ops and op sets share one namespace: `edges dense: s` could mean either
    op_names: dict[str, tuple[str, SourceSpan]] = {}

    def once_op(kind: str, name: str, span: SourceSpan) -> None:
        if name in op_names:
            first_kind, first = op_names[name]
            message = (f"{kind} {name!r} is defined twice in this file" if first_kind == kind
                       else f"{name!r} is defined twice in this file (as an op and an op set)")
            raise NasSemanticError(message, span=span,
                                   hint=f"the first definition is at line {first.line}")
        op_names[name] = (kind, span)

    for stmt in stmts:
        if isinstance(stmt, A.OpDef):
            once_op("op", stmt.name, stmt.span)
            (decl.patterns if stmt.is_pattern else decl.ops)[stmt.name] = stmt
            decl.op_sets.pop(stmt.name, None)  # overrides an inherited op set of that name
        elif isinstance(stmt, A.OpsDef):
            once_op("ops", stmt.name, stmt.span)
            decl.op_sets[stmt.name] = stmt
            decl.ops.pop(stmt.name, None)  # overrides an inherited op of that name
        elif isinstance(stmt, (A.CellDef, A.CellDerive)):
            once("cell", stmt.name, stmt.span)
            decl.cells[stmt.name] = stmt
        elif definitions_only or isinstance(stmt, A.Import):
            continue
        elif isinstance(stmt, A.Network):
            once("statement", "network", stmt.span)
            decl.network = stmt
        elif isinstance(stmt, A.AlphaStmt):
            once("statement", "alpha", stmt.span)
            decl.alpha = stmt
        elif isinstance(stmt, A.MethodStmt):
            once("statement", stmt.kind, stmt.span)
            setattr(decl, stmt.kind, stmt)
        elif isinstance(stmt, A.SearchBlock):
            for setting in stmt.settings:
                once("search setting", setting.name, setting.span)
                decl.search[setting.name] = setting
        elif isinstance(stmt, A.TrainBlock):
            for setting in stmt.settings:
                once("train setting", setting.name, setting.span)
                decl.train[setting.name] = setting


def _load(path: Path, stack: tuple[str, ...], span: SourceSpan | None, text: str | None = None) -> A.SpaceFile:
    key = str(path.resolve()) if text is None else str(path)
    if key in stack:
        chain = " -> ".join(Path(p).name for p in stack + (key,))
        raise NasSemanticError(f"circular import or extends: {chain}", span=span)
    return parse(text, str(path)) if text is not None else parse_file(str(path))


def _resolve_file(tree: A.SpaceFile, stack: tuple[str, ...]) -> SpaceDecl:
    here = tree.path
    key = str(Path(here).resolve()) if here != "<string>" else here
    stack = stack + (key,)
    header = tree.header
    if header and header.extends is not None:  # `extends ""` is a missing file, not no base
        base_path = find_file(header.extends, here, header.span)
        base_tree = _load(base_path, stack, header.span)
        decl = _resolve_file(base_tree, stack)
    else:
        decl = SpaceDecl(name=Path(here).stem, path=here)
    decl.files.append(here)
    for stmt in tree.statements:
        if isinstance(stmt, A.Import):
            imp_path = find_file(stmt.path, here, stmt.span)
            imp_tree = _load(imp_path, stack, stmt.span)
            imported = _resolve_file(imp_tree, stack)
            decl.files.extend(f for f in imported.files if f not in decl.files)
            decl.ops.update(imported.ops)
            decl.patterns.update(imported.patterns)
            decl.op_sets.update(imported.op_sets)
            decl.cells.update(imported.cells)
            decl.imported_params.update(imported.imported_params)
            decl.imported_params.update({name: str(imp_path) for name in imported.params})
    if header:
        decl.name = header.name
        seen: dict[str, A.Param] = {}
        for param in header.params:
            if param.name in seen:
                raise NasSemanticError(f"parameter {param.name!r} is declared twice", span=param.span,
                                       hint=f"the first declaration is at column {seen[param.name].span.col}")
            seen[param.name] = param
            decl.params[param.name] = param
    decl.path = here
    decl.headed = header is not None
    decl.span = header.span if header else SourceSpan(file=here, line=1, col=1)
    _add_definitions(decl, tree.statements, definitions_only=False, file=here)
    return decl


def resolve_source(text: str, file: str = "<string>") -> SpaceDecl:
    """Parse and resolve source text (imports are relative to `file`)."""
    return _resolve_file(parse(text, file), ())


def resolve_path(path: str | Path) -> SpaceDecl:
    """Parse and resolve a `.nas` file; a bare bundled name such as `darts` also works."""
    p = Path(path)
    if not _is_file(p):
        if p.suffix in ("", ".nas") and len(p.parts) == 1:
            p = find_file(str(path), None)
        elif p.is_dir():  # `nasc check spaces/` is not "no such file": say what it is and what is in it
            found = sorted(f.name for f in p.glob("*.nas"))
            raise NasSyntaxError(f"cannot read {path}: it is a directory, not a .nas file",
                                 hint=f"name the files in it: {', '.join(found[:8])}{', …' * (len(found) > 8)}"
                                 if found
                                 else "name a .nas file")
        elif (bundled_dir() / p.name).is_file():  # `spaces/darts.nas` from outside the repository
            raise NasSyntaxError(f"cannot read {path}: no such file",
                                 hint=f"{p.name!r} is a bundled space: name it as `{p.stem}`")
        else:
            raise NasSyntaxError(f"cannot read {path}: no such file", hint="bundled spaces: " + ", ".join(
                sorted(b.stem for b in bundled_dir().glob("*.nas"))))
    return _resolve_file(parse_file(str(p)), ())
