"""Resolving op references (`sep_conv_3x3`, `conv(1)`, `darts_ops`) to op templates.

An op reference is looked up among the ops the space defines, then among op
families (`op sep_conv_{k}x{k}` matches `sep_conv_3x3` with k = 3), then among
the primitives. Bodies are evaluated against the space parameters and the
bound arguments; the context variables (`C`, `C_in`, `stride`, `searching`)
stay symbolic until the op is placed on an edge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nasc.compiler.expr import CONTEXT_VARS, call_hint, evaluate, is_sym
from nasc.compiler.ir import OpTemplate, Step
from nasc.compiler.primitives import PRIMITIVES
from nasc.compiler.resolve import SpaceDecl
from nasc.errors import NascError, NasSemanticError, SourceSpan, did_you_mean
from nasc.grammar import ast as A

_SYMS = frozenset(CONTEXT_VARS)


def pattern_regex(pattern: str) -> tuple[re.Pattern, list[str]]:
    """`sep_conv_{k}x{k}` → a regex binding k to the same integer twice, and the variable names."""
    names: list[str] = []
    out = []
    for part in re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", pattern):
        if part.startswith("{"):
            name = part[1:-1]
            out.append(f"(?P={name})" if name in names else f"(?P<{name}>\\d+)")
            if name not in names:
                names.append(name)
        else:
            out.append(re.escape(part))
    return re.compile("".join(out) + r"\Z"), names


def canonical_name(call: A.OpCall, env: Mapping[str, Any]) -> str:
    """The name a candidate is known by in α tables and genotypes."""
    if not call.args and not call.kwargs:
        return call.name
    parts = [_fmt(evaluate(a, env, _SYMS)) for a in call.args]
    parts += [f"{k}={_fmt(evaluate(v, env, _SYMS))}" for k, v in call.kwargs]
    return f"{call.name}({', '.join(parts)})"


def _fmt(v: Any) -> str:
    if is_sym(v):  # a value that depends on the edge, e.g. `conv(3, stride)`: written as in the source
        return _fmt_sym(v)
    return str(v).lower() if isinstance(v, bool) else str(v)


def _fmt_sym(v: Any, outer: bool = True) -> str:
    if not is_sym(v):
        return _fmt(v)
    head = v[0]
    if head == "var":
        return v[1]
    if head == "neg":
        text = f"-{_fmt_sym(v[1], False)}"
    elif head == "not":
        text = f"not {_fmt_sym(v[1], False)}"
    else:
        text = f"{_fmt_sym(v[1], False)} {head} {_fmt_sym(v[2], False)}"
    return text if outer else f"({text})"


class OpResolver:
    """Resolves op references of one space, caching templates by canonical name."""

    def __init__(self, decl: SpaceDecl, params: Mapping[str, Any]):
        self.decl = decl
        # what names mean in op bodies and candidate lists: the space parameters, except that a context
        # name (`C`, `stride`, ...) means the edge's value there even where a parameter has that name
        # (DARTS-like spaces have a parameter C; sharpDARTS' flood conv is `conv(1, out = 4 * C)`)
        self.params = {k: v for k, v in params.items() if k not in _SYMS}
        self.templates: dict[str, OpTemplate] = {}
        self._patterns = [(pattern_regex(name), d) for name, d in decl.patterns.items()]
        self._active: list[str] = []

    # ---- names ----
    def known_names(self) -> list[str]:
        examples = [re.sub(r"\{[^}]*\}", "3", p) for p in self.decl.patterns]
        return sorted(set(self.decl.ops) | set(examples) | set(PRIMITIVES) | set(self.decl.op_sets))

    def find(self, name: str, span: SourceSpan, *, prefer_primitive: bool = False
             ) -> tuple[str, Any, dict[str, Any]] | None:
        """What `name` refers to: a defined op, else the one op family it matches, else a primitive."""
        if prefer_primitive and name in PRIMITIVES:
            return "prim", PRIMITIVES[name], {}
        if name in self.decl.ops:
            return "op", self.decl.ops[name], {}
        matches = [(d, m) for (regex, _), d in self._patterns if (m := regex.match(name))]
        if len(matches) > 1:
            first, second = sorted(d.name for d, _ in matches)[:2]
            raise NasSemanticError(f"op {name!r} is ambiguous: it matches both families {first!r} and {second!r}",
                                   span=span, hint="rename one family, or define the op itself: "
                                                   f"`op {name} = ...` takes precedence over families")
        if matches:
            d, m = matches[0]
            return "op", d, {n: int(v) for n, v in m.groupdict().items()}
        if name in PRIMITIVES:
            return "prim", PRIMITIVES[name], {}
        return None

    def unknown(self, name: str, span: SourceSpan, what: str = "op") -> NasSemanticError:
        hint = did_you_mean(name, self.known_names())
        if hint is None and self.decl.patterns:
            hint = "op families defined here: " + ", ".join(sorted(self.decl.patterns))
        return NasSemanticError(f"unknown {what} {name!r}", span=span, hint=hint)

    # ---- candidates ----
    def candidates(self, cands: A.OpList | A.OpCall, _sets: tuple[str, ...] = ()) -> list[tuple[str, A.OpCall]]:
        """Expand a candidate expression (a list, an op-set name or one op) to (name, call) pairs."""
        if isinstance(cands, A.OpCall) and not cands.args and not cands.kwargs and cands.name in self.decl.op_sets:
            if cands.name in _sets:
                chain = " -> ".join(_sets + (cands.name,))
                raise NasSemanticError(f"op set {cands.name!r} includes itself ({chain})", span=cands.span)
            _sets = _sets + (cands.name,)
            items = self.decl.op_sets[cands.name].items
        elif isinstance(cands, A.OpList):
            items = cands.items
        else:
            items = (cands,)
        out: list[tuple[str, A.OpCall]] = []
        keys: dict[str, str] = {}  # what each candidate computes -> the name it was listed under
        broken: list[NascError] = []  # every bad candidate of the list is reported, not just the first
        for call in items:
            if not call.args and not call.kwargs and call.name in self.decl.op_sets:
                for name, inner in self.candidates(call, _sets):  # op sets may include other op sets
                    self._once(name, inner, keys)
                    out.append((name, inner))
                continue
            name = canonical_name(call, self.params)
            try:
                self.template(call)
            except NasSemanticError as e:
                broken.extend(e.errors)
                continue
            self._once(name, call, keys)
            out.append((name, call))
        if broken:
            first = broken[0]
            raise NasSemanticError(first.message, span=first.span, hint=first.hint, errors=broken)
        if not out:
            span = cands.span
            raise NasSemanticError("empty candidate set", span=span, hint="list at least one op, e.g. [skip_connect]")
        return out

    def _once(self, name: str, call: A.OpCall, keys: dict[str, str]) -> None:
        """A candidate may appear only once per list, however its arguments are spelled (`cb(3)`, `cb(k = 3)`)."""
        key = self.call_key(call)
        if key in keys:
            first = keys[key]
            same = f"candidate {name!r} is listed twice" if first == name else \
                f"candidate {name!r} is listed twice (also as {first!r})"
            raise NasSemanticError(same, span=call.span, hint="a candidate may appear only once per list")
        keys[key] = name

    def call_key(self, call: A.OpCall) -> str:
        """What a call computes: its target and every argument bound by name (defaults filled for primitives)."""
        kind, target, bound = self.find(call.name, call.span)  # already resolved by `template`
        if kind == "prim":
            values = {p.name: p.default for p in target.params if p.default is not None}
            values.update(self.prim_step(target.name, call, self.params).args)
        else:
            values = self._bind(target, call, bound, self.params)
        return repr((kind, target.name, sorted(values.items())))

    # ---- templates ----
    def template(self, call: A.OpCall) -> OpTemplate:
        """The op template a candidate reference denotes (cached by canonical name)."""
        name = canonical_name(call, self.params)
        if name in self.templates:
            return self.templates[name]
        found = self.find(call.name, call.span)
        if found is None:
            raise self.unknown(call.name, call.span)
        kind, target, bound = found
        if kind == "prim":
            step = self.prim_step(target.name, call, self.params)
            tmpl = OpTemplate(name=name, default=(step,), guards=(True,), span=call.span)
        else:
            tmpl = self._op_template(name, target, call, bound)
        self.templates[name] = tmpl
        return tmpl

    def _bind(self, d: A.OpDef, call: A.OpCall, bound: dict[str, Any], env: Mapping[str, Any]) -> dict[str, Any]:
        formals = list(d.formals)
        if len(call.args) > len(formals):
            raise NasSemanticError(f"op {d.name!r} takes {len(formals)} argument(s), got {len(call.args)}",
                                   span=call.span, hint=f"defined at line {d.span.line}")
        clash = [f for f in formals if f in bound]
        if clash:  # `op x_{k}(k)`: the argument silently won, so `x_3(5)` was a 5x5 op named 3
            raise NasSemanticError(f"op {d.name!r}: parameter {clash[0]!r} has the name of a family variable",
                                   span=d.span, hint=f"rename the parameter or the {{{clash[0]}}} in the op's name")
        values = dict(bound)
        for f, a in zip(formals, call.args):
            values[f] = evaluate(a, env, _SYMS)
        for k, v in call.kwargs:
            if k not in formals:
                raise NasSemanticError(f"op {d.name!r} has no parameter {k!r}", span=v.span,
                                       hint=did_you_mean(k, formals) or f"parameters: {', '.join(formals) or 'none'}")
            if k in values:
                raise NasSemanticError(f"op {d.name!r} got {k!r} twice", span=v.span)
            values[k] = evaluate(v, env, _SYMS)
        missing = [f for f in formals if f not in values]
        if missing:
            raise NasSemanticError(f"op {d.name!r} needs argument(s) {', '.join(missing)}", span=call.span)
        return values

    def _op_template(self, name: str, d: A.OpDef, call: A.OpCall, bound: dict[str, Any]) -> OpTemplate:
        if d.name in self._active:
            chain = " -> ".join(self._active + [d.name])
            raise NasSemanticError(f"op {d.name!r} is defined in terms of itself ({chain})", span=call.span)
        self._active.append(d.name)
        try:
            env = {**self.params, **self._bind(d, call, bound, self.params)}
            steps, guards = self.pipeline(d.body.pipeline, env)
            alts, alt_guards = [], []
            check_alternatives(d.body)
            for alt in d.body.alternatives:
                s, g = self.pipeline(alt.pipeline, env)
                alts.append((alt.stride, s))
                alt_guards.append(g)
            return OpTemplate(name=name, default=steps, guards=guards, alternatives=tuple(alts),
                              alt_guards=tuple(alt_guards), span=d.span)
        finally:
            self._active.pop()

    def pipeline(self, pipe: A.Pipeline, env: Mapping[str, Any], scope: Mapping[str, Any] | None = None
                 ) -> tuple[tuple[Step, ...], tuple[Any, ...]]:
        """Evaluate a pipeline to primitive steps (inlining user ops), with one guard per step.

        `scope`: the names op bodies inlined here see besides their arguments (default: the space
        parameters with context names left to the edge). The network's own pipelines (stem, layers,
        head, preprocess) pass every parameter, so `C` there is the space parameter, inside ops too.
        """
        steps: list[Step] = []
        guards: list[Any] = []
        for step in pipe.steps:
            guard = True if step.guard is None else evaluate(step.guard, env, _SYMS)
            if not is_sym(guard) and not isinstance(guard, bool):
                raise NasSemanticError("a step condition must be true/false", span=step.guard.span,
                                       hint="e.g. `bn if searching`")
            # inside `op noise = noise(stride)` the body's `noise` is the primitive, not the op itself
            found = self.find(step.call.name, step.call.span, prefer_primitive=step.call.name in self._active)
            if found is None:
                raise self.unknown(step.call.name, step.call.span)
            kind, target, bound = found
            if kind == "prim":
                steps.append(self.prim_step(target.name, step.call, env))
                guards.append(guard)
                continue
            if target.body.alternatives:
                raise NasSemanticError(
                    f"op {target.name!r} has `on stride` alternatives and cannot be used inside another op",
                    span=step.call.span, hint="use it directly as a candidate, or split it into two ops")
            if step.call.name in self._active or target.name in self._active:
                chain = " -> ".join(self._active + [target.name])
                raise NasSemanticError(f"op {target.name!r} is defined in terms of itself ({chain})",
                                       span=step.call.span)
            self._active.append(target.name)
            try:
                inner_env = {**(self.params if scope is None else scope), **self._bind(target, step.call, bound, env)}
                inner, inner_guards = self.pipeline(target.body.pipeline, inner_env, scope)
            finally:
                self._active.pop()
            steps.extend(inner)
            guards.extend(_and(guard, g) for g in inner_guards)
        return tuple(steps), tuple(guards)

    def prim_step(self, prim: str, call: A.OpCall, env: Mapping[str, Any]) -> Step:
        """A primitive call with its arguments matched to the primitive's parameters."""
        spec = PRIMITIVES[prim]
        names = [p.name for p in spec.params]
        if len(call.args) > len(names):
            raise NasSemanticError(f"{prim} takes at most {len(names)} positional argument(s), got {len(call.args)}",
                                   span=call.span, hint=f"{prim}({', '.join(names)})" if names else f"write just `{prim}`")
        args: dict[str, Any] = {}
        for name, a in zip(names, call.args):
            args[name] = evaluate(a, env, _SYMS)
        for k, v in call.kwargs:
            if k not in names:
                raise NasSemanticError(f"{prim} has no parameter {k!r}", span=v.span,
                                       hint=did_you_mean(k, names) or f"parameters: {', '.join(names) or 'none'}")
            if k in args:
                raise NasSemanticError(f"{prim} got {k!r} twice", span=v.span)
            args[k] = evaluate(v, env, _SYMS)
        for p in spec.params:
            if p.required and p.name not in args:
                raise NasSemanticError(f"{prim} needs its {p.name!r} argument", span=call.span,
                                       hint=f"{prim}({', '.join(names)})")
            value = args.get(p.name)
            if value is None or is_sym(value):
                continue
            if p.kind is bool and not isinstance(value, bool):
                raise NasSemanticError(f"{prim}: {p.name!r} must be true or false, got {value!r}", span=call.span)
            if p.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                if not (isinstance(value, float) and value.is_integer()):
                    raise NasSemanticError(f"{prim}: {p.name!r} must be an integer, got {value!r}", span=call.span,
                                           hint=call_hint(value))
                args[p.name] = int(value)
            if p.kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise NasSemanticError(f"{prim}: {p.name!r} must be a number, got {value!r}", span=call.span)
            if p.kind is int and p.name in ("k", "stride", "dilation", "groups", "out") and args[p.name] < 1:
                raise NasSemanticError(f"{prim}: {p.name!r} must be at least 1, got {args[p.name]}", span=call.span)
        problem = spec.check({k: v for k, v in args.items() if not is_sym(v)})
        if problem:
            raise NasSemanticError(f"{prim}: {problem[0]}", span=call.span, hint=problem[1])
        return Step(prim=prim, args=tuple(sorted(args.items())), span=call.span)


def check_alternatives(body: A.OpBody) -> None:
    """Each `on stride N:` names a stride of at least 1, once: a second one for the same stride was never used."""
    seen: dict[int, A.Alternative] = {}
    for alt in body.alternatives:
        if alt.stride < 1:
            raise NasSemanticError("a stride must be at least 1", span=alt.span)
        if alt.stride in seen:
            raise NasSemanticError(f"a second `on stride {alt.stride}:` alternative", span=alt.span,
                                   hint=f"only the first, at {seen[alt.stride].span.line}:{seen[alt.stride].span.col}, "
                                        "would be used; keep one")
        seen[alt.stride] = alt


def _and(a: Any, b: Any) -> Any:
    if a is True:
        return b
    if b is True:
        return a
    if a is False or b is False:
        return False
    return ["and", a, b]
