"""Rich renderables for the CLI (built here, printed only by `nasc.cli`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def human(n: float, unit: str = "") -> str:
    """1930618 -> '1.93M'; bytes with unit='B' -> '120.2 MiB'."""
    if unit == "B":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(n) < 1024 or suffix == "TiB":
                return f"{n:.1f} {suffix}" if suffix != "B" else f"{int(n)} B"
            n /= 1024
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def architectures(n: int) -> str:
    """15,625, or 1.077e+18 (1,076,746,950,455,072,400); beyond 60 digits the scientific form alone.

    Through Decimal, not float: a large cell has more than 10^308 architectures, which no float holds.
    """
    if n < 10**9:
        return f"{n:,}"
    return f"{Decimal(n):.3e}" + (f" ({n:,})" if n < 10**60 else "")


class _ValueGrid(Table):
    """A label/value grid whose values print as written: a path, parameter or option value such as
    '[/x]' is text, not a rich markup tag (one was read as a closing tag: a MarkupError traceback)."""

    def add_row(self, label: str, value: Any = "", *rest: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().add_row(label, Text(str(value)), *rest, **kwargs)


def value_grid() -> Table:
    """The two-column label/value grid of `nasc compile` and `nasc search --dry-run`."""
    head = _ValueGrid.grid(padding=(0, 2))
    head.add_column(style="bold cyan")
    head.add_column()
    return head


def compile_summary(s: dict[str, Any], *, files: list[str], out: str | None) -> Group:
    head = value_grid()
    head.add_row("space", f"{s['space']}  ({', '.join(files)})")
    head.add_row("fingerprint", s["fingerprint"])
    head.add_row("parameters", ", ".join(f"{k} = {v}" for k, v in s["params"].items()) or "none")
    head.add_row("input", " x ".join(str(d) for d in s["input"]))
    head.add_row("network", s["network"])
    head.add_row("architectures", architectures(s["architectures"]))
    head.add_row("supernet", f"{s['supernet_params']:,} weights ({human(s['supernet_params'])}), "
                             f"{human(s['supernet_madds'])} multiply-adds per sample")
    head.add_row("activations", f"{human(s['activation_bytes_per_sample'], 'B')} per sample "
                                f"({human(s['activation_bytes_per_sample'] * s['search'].get('batch', 64), 'B')} "
                                f"at batch {s['search'].get('batch', 64)})")
    relax = s["relax"]
    head.add_row("relaxation", relax["name"] + _opts(relax["options"]))
    rule = s["select"]["rule"]
    head.add_row("selector", f"{s['select']['name']}: per {rule['per']}"
                 + (f", top {rule['k']}" if rule["per"] == "node" else "")
                 + (f", excluding {', '.join(rule['exclude'])}" if rule["exclude"] else ""))
    alpha = ", ".join(f"{g} {r}x{c}" for g, (r, c) in list(s["alpha"]["groups"].items())[:6])
    if len(s["alpha"]["groups"]) > 6:
        alpha += f", … ({len(s['alpha']['groups'])} groups)"
    head.add_row("alpha", f"{s['alpha']['mode'].replace('_', ' ')}: {alpha or 'nothing to search'}")
    if out:
        head.add_row("IR written to", out)
    parts: list[Any] = [head]
    if s["cells"]:
        t = Table(title="cells", title_justify="left", show_edge=False)
        for col in ("cell", "inputs", "nodes", "edges", "candidates/edge", "instances", "output"):
            t.add_column(col)
        for c in s["cells"]:
            t.add_row(c["name"] + (" (reduction)" if c["reduction"] else ""), ", ".join(c["inputs"]), str(c["nodes"]),
                      str(c["edges"]), str(c["candidates"]), str(c["instances"]), c["output"])
        parts.append(t)
    t = Table(title="candidate costs (whole supernet, per sample)", title_justify="left", show_edge=False)
    for col in ("op", "placements", "params", "multiply-adds", "activations"):
        t.add_column(col, justify="right" if col != "op" else "left")
    for op, v in sorted(s["per_op"].items(), key=lambda kv: -kv[1].get("params", 0)):
        t.add_row(op, str(v.get("count", 0)), f"{v.get('params', 0):,}", human(v.get("madds", 0)),
                  human(v.get("act", 0), "B"))
    parts.append(t)
    return Group(*parts)


def _opts(options: dict) -> str:
    if not options:
        return ""
    return "(" + ", ".join(f"{k} = {v}" for k, v in options.items()) + ")"


def error_text(rendered: str) -> Text:
    text = Text()
    for i, line in enumerate(rendered.splitlines()):
        if i:
            text.append("\n")
        if ": error: " in line:
            loc, msg = line.split(": error: ", 1)
            text.append(loc + ": ", style="bold")
            text.append("error: ", style="bold red")
            text.append(msg)
        elif line.startswith("error: "):
            text.append("error: ", style="bold red")
            text.append(line[len("error: "):])
        elif line.strip().startswith("hint:"):
            text.append(line, style="cyan")
        elif set(line.strip()) <= {"^"} and line.strip():
            text.append(line, style="bold red")
        else:
            text.append(line)
    return text
