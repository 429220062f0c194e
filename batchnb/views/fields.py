"""One form control per config field, chosen from the field's type hint (STYLE.md habit 8).

Literal -> Dropdown, bool -> Checkbox, int -> IntText, float -> FloatText, optional number or text -> Text
(blank means None), a nested dataclass -> its own fields, a mapping -> JSON text. A control only converts text
to Python values; whether the value is allowed is decided by `JobConfig` alone, so the form shows exactly the
messages `BatchJob(...)` raises.
"""

from __future__ import annotations

import dataclasses
import html
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = ["Control", "controls_for", "parse_number"]

NONE_LABEL = "(default)"


class Control:
    """A widget for one field: `widget` to show, `get()` the value for the config, `error` to flag a problem.

    `help` (the field's metadata help, the same text `batchnb run --help` shows) is the input's tooltip and a
    short line under it.
    """

    def __init__(self, name: str, widget, get: Callable[[], Any], *, label: str | None = None, help: str = "") -> None:
        import ipywidgets as w

        self.name = name
        self.input = widget
        self.get = get
        self.error = w.HTML("")
        self.error.add_class("batchnb-field-error")
        widget.add_class(f"batchnb-field-{name.replace('.', '-')}")
        widget.description = label or name.removeprefix("resources.").replace(".", " ").replace("_", " ")
        widget.style = {"description_width": "130px"}
        self.help = w.HTML("")
        self.help.add_class("batchnb-field-help")
        self.help.layout = w.Layout(margin="-4px 0 4px 136px")  # under the input, past its description
        self.set_help(help)
        self.extra: list = []  # widgets shown beside the input (badges, estimates, descriptions)
        self.row = w.VBox([w.HBox([widget, self.error]), self.help])

    def set_help(self, text: str) -> None:
        self.input.tooltip = text or None
        self.help.value = f"<small>{html.escape(text)}</small>" if text else ""

    def show_extra(self, *widgets) -> None:
        import ipywidgets as w

        self.extra = list(widgets)
        self.row.children = (w.HBox([self.input, *widgets, self.error]), self.help)

    def observe(self, callback: Callable[[Any], None]) -> None:
        self.input.observe(callback, names="value")


def parse_number(text: str, name: str, *, kind: type = float) -> Any:
    """'' -> None; '0.5' -> 0.5; '3' -> 3 (an int when it looks like one); anything else: ValueError naming it."""
    text = text.strip().replace("_", "")
    if not text:
        return None
    try:
        if kind is int or (kind is float and text.lstrip("-").isdigit()):
            return int(text)
        return float(text)
    except ValueError:
        raise ValueError(f"`{name}` must be a number, got {text!r}") from None


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the hint without None, whether None is allowed)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional  # noqa: UP007
    return hint, False


def controls_for(cls: type, value: Any, *, prefix: str = "") -> list[Control]:
    """Controls for every field of dataclass `cls`, showing the current `value` (an instance of `cls`)."""
    hints = typing.get_type_hints(cls)
    return [control_for(prefix + f.name, hints[f.name], getattr(value, f.name), f) for f in dataclasses.fields(cls)]


def control_for(name: str, hint: Any, current: Any, field: dataclasses.Field | None = None) -> Control:
    """The control of one field; its metadata gives the help text and, for registry names, the choices."""
    meta = field.metadata if field is not None else {}
    control = _input_for(name, hint, current, meta.get("choices"))
    control.set_help(meta.get("help", ""))
    return control


def _input_for(name: str, hint: Any, current: Any, choices: Callable[[], list[str]] | None) -> Control:
    import ipywidgets as w

    inner, optional = _optional(hint)
    if choices is not None or typing.get_origin(inner) is Literal:
        names = list(choices()) if choices is not None else [str(v) for v in typing.get_args(inner)]
        if current is not None and current not in names:
            names.append(current)
        options: list[tuple[str, str | None]] = [(NONE_LABEL, None)] if optional else []
        options += [(v, v) for v in names]
        dropdown = w.Dropdown(options=options, value=current)
        return Control(name, dropdown, lambda: dropdown.value)
    if inner is bool:
        box = w.Checkbox(value=bool(current), indent=False)
        return Control(name, box, lambda: box.value)
    if inner is int and not optional:
        field = w.IntText(value=current)
        return Control(name, field, lambda: field.value)
    if inner is float and not optional:
        field = w.FloatText(value=current)
        return Control(name, field, lambda: field.value)
    if _is_mapping(inner):
        area = w.Textarea(value=json.dumps(dict(current or {})), placeholder="{} (JSON)", rows=1)
        return Control(name, area, lambda: _parse_json(area.value, name))
    text = w.Text(value="" if current is None else str(current), placeholder="none" if optional else "")
    args = set(typing.get_args(inner)) if typing.get_args(inner) else {inner}
    if args <= {int, float}:
        kind = int if args == {int} else float
        return Control(name, text, lambda: parse_number(text.value, name, kind=kind))
    if args & {int, float}:  # a number or a string, e.g. memory_limit: 0.8, 8_000_000_000 or "8GB"
        return Control(name, text, lambda: _number_or_text(text.value))
    return Control(name, text, lambda: text.value.strip() or (None if optional else ""))


def _is_mapping(hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _parse_json(text: str, name: str) -> dict:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f'`{name}` must be a JSON object such as {{"separator": ";"}}: {exc.msg}') from None
    if not isinstance(value, dict):
        raise ValueError(f"`{name}` must be a JSON object, got {text.strip()!r}")
    return value


def _number_or_text(text: str) -> Any:
    text = text.strip()
    try:
        return parse_number(text, "value")
    except ValueError:
        return text
