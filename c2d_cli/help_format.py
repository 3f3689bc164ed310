"""How `c2d --help` shows flags: typer's rich help prints a type after every option, `<bool>` after a
flag too (`--help`, `--wait`), which reads as if the flag took a value. Here a flag shows no type."""

from __future__ import annotations

from typing import Any


def hide_flag_types() -> None:
    """Patch typer's option type column once: nothing for flags, typer's own for every other option."""
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "hides_flag_types", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else original(self, ctx)

    display_type_rich.hides_flag_types = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
