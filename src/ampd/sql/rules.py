"""Amp's rules for a query's plan, checked after planning and before any data is read.

- A column alias may not start with `_`: those names are reserved (`_block_num`).
- The result may not have two columns of one name (`SELECT * FROM a JOIN b` with a
  column in both): a client keyed by name could not tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# DataFusion names the columns of UNNEST like this itself; Amp lets them through.
_UNNEST_PLACEHOLDER = "__unnest_placeholder"


class QueryRuleError(ValueError):
    """A plan that breaks one of the rules; the message says which and what to do."""


def check_plan(frame: Any) -> None:  # a datafusion DataFrame
    """Raise QueryRuleError if the planned `frame` breaks a rule."""
    plan = frame.logical_plan()
    for node in _nodes(plan):
        for expr in _top_expressions(node):
            if expr.variant_name() != "Alias":
                continue
            name = expr.to_variant().alias()
            if name.startswith("_") and not name.startswith(_UNNEST_PLACEHOLDER):
                raise QueryRuleError(
                    f"expression contains a column alias starting with '_': '{name}'. "
                    "Underscore-prefixed names are reserved. Please rename your column"
                )
    names = frame.schema().names
    repeated = sorted({n for n in names if names.count(n) > 1}, key=names.index)
    if repeated:
        sources = _sources(plan)
        groups = [
            " and ".join(s for s, n in sources if n == name) or f"{name} and {name}"
            for name in repeated
        ]
        raise QueryRuleError(
            f"Duplicate field names detected in plan schema: [{', '.join(groups)}]. "
            "Please alias your columns to be unique."
        )


def _nodes(plan: Any) -> Iterator[Any]:
    """Every node of the plan, without recursion: a union of a thousand files is a
    thousand levels deep."""
    stack = [plan]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.inputs())


def _top_expressions(node: Any) -> list[Any]:
    variant = node.to_variant()
    exprs: list[Any] = []
    for method in ("projections", "aggregate_exprs", "group_by_exprs"):
        getter = getattr(variant, method, None)
        if getter is not None:
            exprs.extend(getter())
    return exprs


def _sources(plan: Any) -> list[tuple[str, str]]:
    """(qualified name, output name) of the top projection's columns, when it has one."""
    variant = plan.to_variant()
    getter = getattr(variant, "projections", None)
    if getter is None:
        return []
    out = []
    for expr in getter():
        qualified = expr.schema_name()
        out.append((qualified, qualified.rsplit(".", 1)[-1]))
    return out
