"""A Griffe extension for the API page: each ``**measure`` row shows the measurement arguments.

The callbacks take the measurement arguments as ``**measure: Unpack[MeasureArgs]`` (or inside
``**budget``, ``**cap``, ...), which the API page showed as one row of names (griffe does not
expand ``Unpack``); a reader had to find `MeasureOptions` for what ``country``
or ``pue`` mean. This replaces that row with one row per argument, its description and default
taken from `MeasureOptions`' docstring and fields, where they are written once.
"""

from __future__ import annotations

from typing import Any

import griffe

OPTIONS = "energy_core.options.MeasureOptions"
ROW = "**measure"


class MeasureArguments(griffe.Extension):
    """Replace the ``**measure`` row of every class taking ``**measure: Unpack[MeasureArgs]``."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        try:
            options = pkg.modules_collection[OPTIONS]
        except KeyError:  # energy_core is preloaded (mkdocs.yml); nothing to take the rows from yet
            return
        # parsed apart from the page's own rendering of it (its dataclass __init__ is not made yet)
        parsed = options.docstring.parse(warn_unknown_params=False, warn_missing_types=False)
        described = next(s for s in parsed if s.kind is griffe.DocstringSectionKind.parameters)
        defaults = {name: attr.value for name, attr in options.attributes.items()}
        annotations = {name: attr.annotation for name, attr in options.attributes.items()}
        rows = [
            griffe.DocstringParameter(
                p.name, description=p.description, annotation=annotations.get(p.name), value=defaults.get(p.name)
            )
            for p in described.value
        ]
        for cls in _measuring(pkg):
            # Parsed here, as the page would (a class taking **budget or **cap documents rows its
            # signature does not show: api.md turns that warning off for them), then kept.
            sections = cls.docstring.parse(warn_unknown_params=False, warn_missing_types=False)
            for section in sections:
                if section.kind is griffe.DocstringSectionKind.parameters:
                    at = next((i for i, p in enumerate(section.value) if p.name == ROW), None)
                    if at is not None:
                        section.value[at : at + 1] = rows
            cls.docstring.parsed = sections  # the cached parse the page renders


def _measuring(obj: griffe.Object) -> list[griffe.Object]:
    """The classes under ``obj`` whose docstring has a ``**measure`` row."""
    found: list[griffe.Object] = []
    for member in obj.members.values():
        if isinstance(member, griffe.Alias):
            continue
        if member.kind is griffe.Kind.MODULE:
            found.extend(_measuring(member))
        elif member.kind is griffe.Kind.CLASS and member.docstring is not None:
            if any(line.strip().startswith(ROW + ":") for line in member.docstring.value.splitlines()):
                found.append(member)
    return found
