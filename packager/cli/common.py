"""What the command modules share: the consoles, option parsing, help texts and the progress bar."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from rich.console import Console

from packager.errors import BadInput
from packager.platforms import Platform

console = Console()
err_console = Console(stderr=True)

ARTIFACT_HELP = "Artifact directory or its request.yaml."
CACHE_HELP = "Cache root (default $REQUEST_PACK_CACHE or ~/.cache/request-pack)."
BOARD_URL = "sqlite:///scoreboard.db"
BOARD_HELP = "Board database URL: sqlite:///FILE (default sqlite:///scoreboard.db) or postgresql://user@host:port/db."
TRUST_HELP = "Trusted Ed25519 public key (PEM); repeatable."
TRUST_DIR_HELP = "Trust directory: *.pub, authors/*.pub, evaluators/*.pub."
LABELS_HELP = "Ground-truth labels TSV (default: each bundle's labels.tsv)."


def parse_platform(text: str | None) -> Optional[Platform]:
    """One ``--platform``; empty means none given."""
    if not text or not text.strip():
        return None
    try:
        return Platform.parse(text)
    except ValueError:
        raise BadInput(f"unknown platform {text.strip()!r}", field="--platform") from None


def parse_platforms(texts: str | list[str]) -> tuple[Platform, ...]:
    """``--platform linux/amd64,linux/arm64`` (or the option repeated); empty means the manifest's platforms."""
    items = texts.split(",") if isinstance(texts, str) else texts
    return tuple(p for p in map(parse_platform, items) if p is not None)


def progress_bar() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):  # type: ignore[no-untyped-def]
            return Text(f"{task.speed:.1f} img/s" if task.speed else "")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False)


def progress_fn(bar: Any, description: str) -> Callable[[int, int | None], None]:
    """A runner progress callback drawing one task of ``bar``."""
    task = bar.add_task(description, total=None)

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    return update
