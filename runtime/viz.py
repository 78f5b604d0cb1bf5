"""Drawing genotypes as the DARTS paper does, and how α evolved during a search.

A cell is drawn left to right: its inputs (`c_{k-2}`, `c_{k-1}`), the
intermediate nodes numbered 0..n-1 and placed by topological depth, and the
output `c_{k}` that concatenates the kept states (for an NB201-style cell,
whose output is its last node, that node is the output). Edges carry their op,
one colour per op across the whole figure. Chain genotypes are drawn as a strip
of layers. Rendering uses matplotlib's object API (no pyplot, so no global
backend is touched); `.dot` writes Graphviz text instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from nasc.compiler.genotype import GenoCell, Genotype
from nasc.errors import NascError

FORMATS = (".png", ".svg", ".pdf", ".dot")
INPUT_COLOR = "#c1e1c1"  # the DARTS figures' darkseagreen2, lightblue and palegoldenrod
NODE_COLOR = "#add8e6"
OUTPUT_COLOR = "#eee8aa"
NONE_COLOR = "#9e9e9e"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f")


# ---------------------------------------------------------------- layout (pure)


@attrs.frozen(kw_only=True)
class CellLayout:
    """Where each state of a cell goes: `pos[state]` is (column, row); state -1 is the separate output node."""

    pos: dict[int, tuple[float, float]]
    labels: dict[int, str]
    output: int  # -1 for a separate concat node, else the state that is the output
    columns: int
    rows: int


def input_label(i: int, n_inputs: int) -> str:
    """`c_{k-2}`, `c_{k-1}` for DARTS inputs (the previous cells' outputs); `c_{k-1}` for a single input."""
    return f"c_{{k-{n_inputs - i}}}"


def cell_layout(cell: GenoCell) -> CellLayout:
    """Inputs in column 0, each node one column right of its deepest input, the output last."""
    depth = {i: 0 for i in range(cell.n_inputs)}
    for node in range(cell.n_inputs, cell.n_states):
        depth[node] = 1 + max(depth[e.input] for e in cell.incoming(node))
    concat = list(cell.concat)
    separate = not (len(concat) == 1 and concat[0] >= cell.n_inputs)
    output = -1 if separate else concat[0]
    if separate:
        depth[-1] = 1 + max(depth[s] for s in concat)
    columns: dict[int, list[int]] = {}
    for state in sorted(depth, key=lambda s: (depth[s], s if s >= 0 else math.inf)):
        columns.setdefault(depth[state], []).append(state)
    rows = max(len(c) for c in columns.values())
    pos = {}
    for col, states in columns.items():
        for k, s in enumerate(states):
            pos[s] = (float(col), (len(states) - 1) / 2 - k)
    labels = {i: input_label(i, cell.n_inputs) for i in range(cell.n_inputs)}
    labels |= {n: str(n - cell.n_inputs) for n in range(cell.n_inputs, cell.n_states)}
    labels[output] = "c_{k}"
    return CellLayout(pos=pos, labels=labels, output=output, columns=len(columns), rows=rows)


def cell_lines(cell: GenoCell) -> list[str]:
    """A compact text view in genotype numbering: `node 2 <- sep_conv_3x3(0), sep_conv_3x3(1)`."""
    lines = [f"node {n} <- " + ", ".join(f"{e.op}({e.input})" for e in cell.incoming(n))
             for n in range(cell.n_inputs, cell.n_states)]
    if len(cell.concat) == 1:
        lines.append(f"output = state {cell.concat[0]}")
    else:
        lines.append(f"output = concat({', '.join(map(str, cell.concat))})")
    return lines


def op_colors(ops: Sequence[str]) -> dict[str, str]:
    """One colour per op name, stable for a given set of names; `none` is grey."""
    names = sorted(set(ops) - {"none"})
    colors = {op: PALETTE[i % len(PALETTE)] for i, op in enumerate(names)}
    if "none" in ops:
        colors["none"] = NONE_COLOR
    return colors


def genotype_ops(g: Genotype) -> list[str]:
    return [e.op for c in g.cells.values() for e in c.edges] + [op for _, op in g.layers]


def cell_title(name: str) -> str:
    return name if name.lower().endswith("cell") else f"{name} cell"


# ---------------------------------------------------------------- Graphviz text


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(g: Genotype) -> str:
    """Graphviz DOT: one cluster per cell (and one for a chain's layers), edges labelled with their op."""
    colors = op_colors(genotype_ops(g))
    out = ["digraph genotype {", "  rankdir=LR;", "  compound=true;",
           '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
           '  edge [fontname="Helvetica", fontsize=10];']
    for name, cell in g.cells.items():
        lay = cell_layout(cell)
        ident = lambda s: _q(f"{name}/{'out' if s == -1 else s}")  # noqa: E731
        out += [f"  subgraph {_q('cluster_' + name)} {{", f"    label={_q(cell_title(name))};"]
        for s in sorted(lay.pos, key=lambda s: s if s >= 0 else math.inf):
            color = OUTPUT_COLOR if s == lay.output else INPUT_COLOR if 0 <= s < cell.n_inputs else NODE_COLOR
            out.append(f"    {ident(s)} [label={_q(lay.labels[s])}, fillcolor={_q(color)}];")
        for e in cell.edges:
            c = _q(colors[e.op])
            out.append(f"    {ident(e.input)} -> {ident(e.node)} [label={_q(e.op)}, color={c}, fontcolor={c}];")
        if lay.output == -1:
            out += [f"    {ident(s)} -> {ident(-1)} [color=gray];" for s in cell.concat]
        out.append("  }")
    if g.layers:
        out += [f"  subgraph {_q('cluster_layers')} {{", '    label="layers";']
        for i, (layer, op) in enumerate(g.layers):
            out.append(f"    {_q('layer/' + layer)} [label={_q(layer + chr(10) + op)}, "
                       f"fillcolor={_q(NODE_COLOR)}, color={_q(colors[op])}];")
            if i:
                out.append(f"    {_q('layer/' + g.layers[i - 1][0])} -> {_q('layer/' + layer)};")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- matplotlib


def _matplotlib():
    """matplotlib's Figure class (object API: no pyplot, no global backend), or a NascError saying how to get it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise NascError("drawing needs matplotlib, which is not installed", hint="pip install matplotlib") from None
    return Figure


def _tex(label: str) -> str:
    return f"${label}$" if label.startswith("c_") else label


# figure geometry in inches: the layout's column and row steps, and the rough size of boxes and labels
# (the steps size the figure; the drawing then measures the axes it got)
COL_IN, ROW_IN = 1.6, 1.15
NODE_W, NODE_H = 0.42, 0.32
LABEL_CHAR_W, LABEL_H = 0.052, 0.17


def column_inches(cell: GenoCell) -> float:
    """The width of one layout column: COL_IN, or more when an op's label would not fit between two boxes.

    A label wider than the gap covered the boxes and arrows beside it (an 80-character op name hid
    a whole edge to the output); the column grows instead, so every label fits on its own edge.
    """
    longest = max((len(e.op) for e in cell.edges), default=0)
    return max(COL_IN, LABEL_CHAR_W * longest + 0.06 + 1.6 * NODE_W + 0.1)


def _curve(p1, p2, rad: float, t: float) -> tuple[float, float]:
    """A point of matplotlib's `arc3,rad=…` quadratic Bézier (computed in inches, as arc3 does on screen)."""
    (x1, y1), (x2, y2) = p1, p2
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    u = 1 - t
    return u * u * x1 + 2 * u * t * cx + t * t * x2, u * u * y1 + 2 * u * t * cy + t * t * y2


def _bend(p1, p2, others: list[tuple[float, float]]) -> float:
    """The least curvature whose path keeps clear of the other boxes (a straight line when it can)."""
    best, best_clear = 0.0, -1.0
    for rad in (0.0, 0.2, -0.2, 0.35, -0.35, 0.5, -0.5):
        pts = [_curve(p1, p2, rad, k / 20) for k in range(2, 19)]
        clear = min((max(abs(x - ox) - NODE_W / 2, abs(y - oy) - NODE_H / 2)
                     for x, y in pts for ox, oy in others), default=9.0)
        if clear >= 0.08:
            return rad
        if clear > best_clear:
            best, best_clear = rad, clear
    return best


PARALLEL_SPREAD = 0.4  # curvature between two ops on the same (input, node) pair


def arrow_bends(pairs: Sequence[tuple[int, int]], inch: dict[int, tuple[float, float]]) -> list[float]:
    """The curvature of each arrow: clear of other boxes, and apart from arrows between the same two states.

    A genotype may keep two ops on one (input, node) pair (ENAS' and NASNet's published cells do);
    they are drawn as arcs fanned out around the pair's own bend, so that neither hides the other.
    """
    count: dict[tuple[int, int], int] = {}
    for pair in pairs:
        count[pair] = count.get(pair, 0) + 1
    seen: dict[tuple[int, int], int] = {}
    out = []
    for src, dst in pairs:
        base = _bend(inch[src], inch[dst], [p for s, p in inch.items() if s not in (src, dst)])
        n, k = count[(src, dst)], seen.get((src, dst), 0)
        seen[(src, dst)] = k + 1
        out.append(base + (k - (n - 1) / 2) * PARALLEL_SPREAD if n > 1 else base)
    return out


def _overlap(a, b) -> float:
    """Overlap area of two (x, y, w, h) boxes centred on (x, y)."""
    dx = min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2)
    dy = min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2)
    return max(dx, 0.0) * max(dy, 0.0)


def _draw_cell(ax, name: str, cell: GenoCell, colors: dict[str, str]) -> None:
    lay = cell_layout(cell)
    ax.set_xlim(-0.45, lay.columns - 0.55)
    ax.set_ylim(-lay.rows / 2 - 0.1, lay.rows / 2 + 0.1)
    # data units -> inches on paper, so that bends and label spots are judged as they will be seen
    box = ax.get_position()
    fw, fh = ax.figure.get_size_inches()
    sx, sy = box.width * fw / (lay.columns - 0.1), box.height * fh / (lay.rows + 0.2)
    inch = {s: (x * sx, y * sy) for s, (x, y) in lay.pos.items()}
    boxes = {}
    for s, (x, y) in lay.pos.items():
        color = OUTPUT_COLOR if s == lay.output else INPUT_COLOR if 0 <= s < cell.n_inputs else NODE_COLOR
        boxes[s] = ax.text(x, y, _tex(lay.labels[s]), ha="center", va="center", fontsize=11, zorder=3,
                           bbox={"boxstyle": "round,pad=0.45", "fc": color, "ec": "#333333", "lw": 1.0})
    # label boxes must avoid the node boxes (inputs and outputs are wider: c_{k-2})
    taken = [(x, y, NODE_W * (1.6 if lay.labels[s].startswith("c_") else 1.0), NODE_H) for s, (x, y) in inch.items()]
    arrows = [(e.input, e.node, colors[e.op], e.op) for e in cell.edges]
    if lay.output == -1:
        arrows += [(s, -1, "#777777", None) for s in cell.concat]
    bends = arrow_bends([(src, dst) for src, dst, _, _ in arrows], inch)
    for (src, dst, color, op), rad in zip(arrows, bends):
        p1, p2 = inch[src], inch[dst]
        ax.annotate("", xy=lay.pos[dst], xytext=lay.pos[src], zorder=1,
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.4 if op else 1.0,
                                "patchA": boxes[src], "patchB": boxes[dst], "shrinkA": 2, "shrinkB": 2,
                                "connectionstyle": f"arc3,rad={rad}"})
        if op is None:
            continue
        # the label goes on the curve, at the first spot that hides no box or label
        w = LABEL_CHAR_W * len(op) + 0.06
        # (a little past the middle, so the labels of two edges that cross mid-way do not meet)
        ts = sorted((k / 20 for k in range(4, 17)), key=lambda t: abs(t - 0.6))
        spots = [(_curve(p1, p2, rad, t), t) for t in ts]
        (lx, ly), _ = min(spots, key=lambda sp: (sum(_overlap((*sp[0], w, LABEL_H), b) for b in taken),
                                                 abs(sp[1] - 0.6)))
        taken.append((lx, ly, w, LABEL_H))
        # op, cell and layer names come from genotype files and are drawn as written: a '$' is no mathtext
        ax.text(lx / sx, ly / sy, op, ha="center", va="center", fontsize=7, color=color, zorder=2,
                parse_math=False, bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.9})
    ax.set_title(cell_title(name), fontsize=12, parse_math=False)
    ax.set_axis_off()


def _draw_layers(ax, layers: Sequence[tuple[str, str]], colors: dict[str, str], per_row: int) -> None:
    prev = None
    for i, (layer, op) in enumerate(layers):
        x, y = i % per_row, -(i // per_row)
        box = ax.text(x, y, f"{layer}\n{op}", ha="center", va="center", fontsize=8, zorder=3,
                      parse_math=False,
                      bbox={"boxstyle": "round,pad=0.4", "fc": NODE_COLOR, "ec": colors[op], "lw": 2.0})
        if i % per_row:
            ax.annotate("", xy=(x, y), xytext=(x - 1, y), zorder=1,
                        arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 1.0, "patchA": prev,
                                    "patchB": box, "shrinkA": 3, "shrinkB": 3})
        prev = box
    rows = math.ceil(len(layers) / per_row)
    ax.set_xlim(-0.6, min(len(layers), per_row) - 0.4)
    ax.set_ylim(-rows + 0.5, 0.5)
    ax.set_title("layers", fontsize=12)
    ax.set_axis_off()


def _save(fig, path: Path) -> None:
    from matplotlib import rc_context

    try:
        # text stays text in SVG (searchable, and the op names can be checked); TrueType in PDF
        with rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
            fig.savefig(path, format=path.suffix[1:], dpi=150, bbox_inches="tight", facecolor="white")
    except OSError as e:
        raise NascError(f"cannot write {path}: {e.strerror or e}") from None


def check_format(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise NascError(f"cannot tell the format of {path.name!r} from its extension",
                        hint=f"use one of {', '.join(FORMATS)}")
    return path


def draw_genotype(g: Genotype, path: str | Path) -> Path:
    """Draw every cell side by side (and a chain's layers below) to PNG/SVG/PDF, or write DOT, by extension."""
    path = check_format(path)
    if not g.cells and not g.layers:
        raise NascError("the genotype has neither cells nor layers: nothing to draw")
    if path.suffix.lower() == ".dot":
        try:
            path.write_text(to_dot(g), encoding="utf-8")
        except OSError as e:
            raise NascError(f"cannot write {path}: {e.strerror or e}") from None
        return path
    Figure = _matplotlib()
    colors = op_colors(genotype_ops(g))
    layouts = {name: cell_layout(c) for name, c in g.cells.items()}
    per_row = min(len(g.layers), 7) if g.layers else 1
    widths = [column_inches(g.cells[name]) * (lay.columns - 0.1) for name, lay in layouts.items()]
    cell_h = max((ROW_IN * (lay.rows + 0.2) + 0.4 for lay in layouts.values()), default=0.0)
    strip_h = 1.1 * math.ceil(len(g.layers) / per_row) + 0.8 if g.layers else 0.0
    width = max(sum(widths), 1.7 * per_row if g.layers else 0.0, 3.0)
    fig = Figure(figsize=(width, cell_h + strip_h))
    n_rows = bool(g.cells) + bool(g.layers)
    top = 1 - 0.4 / (cell_h + strip_h)  # room for the titles
    grid = fig.add_gridspec(n_rows, max(len(widths), 1), width_ratios=widths or [1],
                            height_ratios=[h for h in (cell_h, strip_h) if h],
                            left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.08, hspace=0.3)
    for k, (name, cell) in enumerate(g.cells.items()):
        _draw_cell(fig.add_subplot(grid[0, k]), name, cell, colors)
    if g.layers:
        _draw_layers(fig.add_subplot(grid[n_rows - 1, :]), g.layers, colors, per_row)
    _save(fig, path)
    return path


# ---------------------------------------------------------------- α over a search


def read_epochs(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a run's metrics.jsonl (a half-written last line is ignored)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise NascError(f"{run_dir} has no metrics.jsonl") from None
    except (OSError, UnicodeDecodeError) as e:
        raise NascError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    records = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if k == len(lines) - 1:
                break  # the run was stopped mid-write
            raise NascError(f"{path}:{k + 1}: not a JSON record ({e.msg})") from None
        if isinstance(record, dict) and record.get("type") == "epoch":
            problem = _epoch_problem(record)
            if problem:
                raise NascError(f"{path}:{k + 1}: {problem}",
                                hint="metrics.jsonl is written by nasc search; was it edited or cut short?")
            records.append(record)
    return records


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _epoch_problem(record: dict[str, Any]) -> str | None:
    """What makes an epoch record unusable for the drawing (its epoch, its α table), or None."""
    epoch = record.get("epoch")
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
        return f"an epoch record needs an integer 'epoch' >= 0, got {epoch!r}"
    alpha = record.get("alpha")
    if alpha is None:
        return None
    tables = alpha.values() if isinstance(alpha, dict) else [alpha]
    for edges in tables:
        probs = edges.values() if isinstance(edges, dict) else [edges]
        if not all(isinstance(p, dict) and all(_is_number(v) for v in p.values()) for p in probs):
            return "its 'alpha' is not {group: {edge: {op: probability}}}"
    return None


def has_alpha(records: Sequence[dict[str, Any]]) -> bool:
    """Whether any epoch record carries an α table (a search's do; a training run's never)."""
    return any(isinstance(r.get("alpha"), dict) and r["alpha"] for r in records)


def run_epochs(records: Sequence[dict[str, Any]]) -> list[int]:
    """Each epoch record's number in the whole run, from 1 as the search's epoch table counts.

    metrics.jsonl counts `epoch` from 0, and a staged search (P-DARTS) starts again at 0 in every
    stage (its records carry `stage`): the stages are numbered one after another, so that the α
    history runs left to right instead of doubling back at each stage.
    """
    out: list[int] = []
    offset, stage, last = 0, None, 0
    for r in records:
        if r.get("stage") != stage:
            offset, stage = offset + last, r.get("stage")
        last = r["epoch"] + 1
        out.append(offset + last)
    return out


def genotype_changes(records: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    """(epoch, genotype) for the first epoch and every epoch whose selected genotype differs from the last,
    epochs numbered as `run_epochs` does."""
    out: list[tuple[int, str]] = []
    for r, epoch in zip(records, run_epochs(records)):
        g = r.get("genotype")
        if g is not None and (not out or out[-1][1] != g):
            out.append((epoch, g))
    return out


def alpha_path(out: str | Path) -> Path:
    """Where the α figure of a drawing `out` goes: `<stem>_alpha.<ext>` (PNG beside a .dot)."""
    out = Path(out)
    ext = ".png" if out.suffix.lower() == ".dot" else out.suffix
    return out.with_name(f"{out.stem}_alpha{ext}")


def draw_alpha(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One small plot per edge (a row of plots per α group), one line per op: its probability over epochs."""
    path = check_format(path)
    if path.suffix.lower() == ".dot":
        raise NascError("the α history is a plot; write it as .png, .svg or .pdf")
    series: dict[str, dict[str, dict[str, list[tuple[int, float]]]]] = {}
    for r, epoch in zip(records, run_epochs(records)):
        alpha = r.get("alpha")
        if not isinstance(alpha, dict):
            continue
        for group, edges in alpha.items():
            for edge, probs in (edges or {}).items():
                for op, p in (probs or {}).items():
                    series.setdefault(group, {}).setdefault(edge, {}).setdefault(op, []).append((epoch, p))
    if not series:
        raise NascError("the run's metrics hold no α (no epoch record with an `alpha` table yet)")
    Figure = _matplotlib()
    colors = op_colors([op for edges in series.values() for probs in edges.values() for op in probs])
    most = max(len(edges) for edges in series.values())
    ncols = min(7, most if most > 1 else sum(len(e) for e in series.values()))
    panels: list[tuple[int, int, str, str]] = []  # (row, col, group, edge)
    row = col = 0
    for group, edges in series.items():
        if most > 1 and col:  # each group of a cell space starts its own row
            row, col = row + 1, 0
        for edge in edges:
            if col == ncols:
                row, col = row + 1, 0
            panels.append((row, col, group, edge))
            col += 1
    nrows = row + 1
    fig = Figure(figsize=(2.3 * ncols, 1.8 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    many = max(len(pts) for edges in series.values() for probs in edges.values() for pts in probs.values()) > 12
    for r, c, group, edge in panels:
        ax = axes[r][c]
        ax.set_axis_on()
        for op, pts in series[group][edge].items():
            xs, ys = zip(*pts)
            ax.plot(xs, ys, color=colors[op], lw=1.2, marker=None if many else "o", ms=2.5, label=op)
        ax.set_title(f"{group}: {edge}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        if c == 0:
            ax.set_ylabel("p(op)", fontsize=7)
    for ax in axes[-1]:
        if ax.axison:
            ax.set_xlabel("epoch", fontsize=7)
    handles = [_line(colors[op], op) for op in colors]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(colors), 8), fontsize=8, frameon=False)
    _save(fig, path)
    return path


def _line(color: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, lw=1.6, label=label)  # a legend handle, never drawn itself
