"""The live display of a search: epoch and step bars, loss/accuracy, throughput, ETA, final table."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class SearchDisplay:
    """Receives the search loop's events and renders them; the loop itself never prints."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.epoch_task = None
        self.step_task = None
        self.t0 = time.perf_counter()
        self.seen = 0
        self.history: list[dict[str, Any]] = []
        self.selection: SelectionDisplay | None = None

    def __enter__(self) -> "SearchDisplay":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "start":
            cfg = event["config"]
            if event.get("title") == "training":
                aux = (f" ({cfg['params_with_aux']:,} with the auxiliary head)"
                       if cfg["params_with_aux"] != cfg["params"] else "")  # no head (none, or dropped)
                self.console.print(f"[bold]training[/bold] a derived {cfg['space']} network on "
                                   f"{cfg['train']['dataset']}: {cfg['params']:,} weights{aux}, "
                                   f"{cfg['madds']:,} multiply-adds per sample, device {cfg['device']}, "
                                   f"run dir {escape(str(event['run_dir']))}")
            else:
                self.console.print(f"[bold]searching[/bold] {cfg['space']} ({cfg['fingerprint']}) with "
                                   f"{cfg['relax']['name']} on {cfg['search']['dataset']}, "
                                   f"{cfg['supernet_weights']:,} weights, device {cfg['device']}, "
                                   f"memory {(cfg.get('memory') or {}).get('mode', 'plain')}, "
                                   f"run dir {escape(str(event['run_dir']))}")
            self.epoch_task = self.progress.add_task("epochs", total=event["epochs"], completed=event["first_epoch"],
                                                     info="")
            self.step_task = self.progress.add_task("steps", total=event["steps"], info="")
        elif kind == "step":
            self.seen += 1
            rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
            self.progress.update(self.step_task, completed=event["step"] + 1, total=event["steps"],
                                 info=f"loss {event['loss']:.3f} acc {event['acc']:.2f} lr {event['lr']:.4f} "
                                      f"{rate:.1f} steps/s")
        elif kind == "epoch":
            self.history.append(event)
            self.progress.update(self.epoch_task, completed=event["epoch"] + 1,
                                 info=f"val acc {_shown(event['val_acc'], '.3f')} "
                                      f"val loss {_shown(event['val_loss'], '.3f')}")
            self.progress.reset(self.step_task)
        elif kind in ("select", "progress"):
            if self.selection is None:
                self.progress.update(self.step_task, visible=False)
                self.selection = SelectionDisplay(self.console, self.progress, decisions=False)
            self.selection(event)
        elif kind == "end":
            self.progress.update(self.step_task, visible=False)

    def summary(self) -> Table:
        table = Table(title="epochs", title_justify="left", show_edge=False)
        for col in ("epoch", "lr", "train loss", "train acc", "val loss", "val acc"):
            table.add_column(col, justify="right")
        for e in self.history[-10:]:
            table.add_row(str(e["epoch"] + 1), f"{e['lr']:.4f}", f"{e['train_loss']:.4f}", f"{e['train_acc']:.3f}",
                          _shown(e["val_loss"], ".4f"), _shown(e["val_acc"], ".3f"))
        return table


def _shown(value: float | None, spec: str) -> str:
    """A metric, or a dash where there is none (training on a dataset without a test split)."""
    return "-" if value is None else format(value, spec)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class SelectionDisplay:
    """A selector's plan, a bar over its work with the selector's own estimate of the time left, and
    (with `decisions`) each decision it makes.

    DARTS-PT's cost is mostly tuning: the plan says how much there is and which options shorten it
    before the first result could.
    """

    def __init__(self, console: Console, progress: Progress, *, decisions: bool = True):
        self.console, self.progress, self.decisions = console, progress, decisions
        self.task = None

    def __call__(self, event: dict[str, Any]) -> None:
        stage = event.get("stage")
        if event["type"] == "progress" and self.task is not None:
            left = event.get("seconds_left")
            self.progress.update(self.task, completed=event["done"], total=event["total"],
                                 info=f"about {_duration(left)} left" if left is not None else "timing...")
        elif stage == "plan":
            tune = event["tune_epochs"]
            self.console.print(
                f"[bold]{event['selector']}[/bold] selection: {event['decisions']} decisions, "
                f"{event['evaluations']} supernet evaluations of {event['eval_batches']} validation batches each"
                + (f", {tune} tuning epochs of {event['tune_batches']} steps each (each about a search epoch)"
                   if tune else ", no tuning")
                + ". Shorter: --select-opt tune_epochs=N (DARTS-PT: 5; 0 skips tuning), eval_batches=N "
                  "(0: the whole validation split).")
            if event.get("warning"):
                self.console.print(f"[yellow]warning:[/yellow] {escape(event['warning'])}")
            self.task = self.progress.add_task("selection", total=event["evaluations"] + tune, info="timing...")
        elif not self.decisions:
            return
        elif stage == "op":
            self.console.print(f"  {event['group']} {event['edge']}: keep [bold]{event['chosen']}[/bold]  "
                               + " ".join(f"{k}:{v:.3f}" for k, v in event["without"].items()))
        elif stage == "topology":
            self.console.print(f"  {event['group']} node {event['node']}: drop edge {event['removed']}")
        elif stage == "tune":
            self.console.print(f"  [dim]tuned: val acc {event['val_acc']:.3f}[/dim]")
