"""Amp's rules for a query's plan, checked after planning and before any data is read.

- A column alias may not start with `_`: those names are reserved (`_block_num`).
- The result may not have two columns of one name (`SELECT * FROM a JOIN b` with a
  column in both): a client keyed by name could not tell them apart.
- A streaming query must be incremental (`check_incremental`): it runs microbatch by
  microbatch, each over its own block ranges, so nothing may need rows of other
  microbatches. Amp's list: no LIMIT, ORDER BY, window or recursive query; an aggregate
  only grouped by `_block_num` first, DISTINCT only as DISTINCT ON (`_block_num`, ...);
  no outer or anti join. Inner and semi joins, which Amp runs against the history of the
  other side, are not supported here yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ampd.sql.references import words

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


_STREAMING = "non-incremental queries are not supported for streaming"
_AMP_JOINS = ("Inner", "LeftSemi", "RightSemi")  # incremental in Amp's rules
_SUBQUERY = "<subquery>"


def check_incremental(frame: Any) -> None:  # a datafusion DataFrame
    """Raise QueryRuleError, with Amp's message, if the planned `frame` cannot run in
    microbatches (Amp's rules: its inner and semi joins pass).

    The plan as written shows a subquery (`IN`, `EXISTS`, a scalar one) only as an
    expression; DataFusion's optimizer turns `IN` / `EXISTS` into semi or anti joins and a
    correlated scalar subquery into an aggregate and a join, so such a plan is checked
    optimized too, and a subquery left as such (an uncorrelated scalar one) is refused."""
    plans = [frame.logical_plan()]
    if _SUBQUERY in plans[0].display_indent():
        optimized = frame.optimized_logical_plan()
        if _SUBQUERY in optimized.display_indent():
            raise QueryRuleError(f"{_STREAMING}, {_non_incremental('ScalarSubquery')}")
        plans.append(optimized)
    for node in (n for plan in plans for n in _nodes(plan)):
        name = node.to_variant().__class__.__name__
        if name == "Join":
            kind = str(node.to_variant().join_type())
            if kind not in _AMP_JOINS:
                raise QueryRuleError(f"{_STREAMING}, {_non_incremental(f'Join({kind})')}")
            continue
        op = _blocking_op(node, name)
        if op is not None:
            raise QueryRuleError(f"{_STREAMING}, {_non_incremental(op)}")


def has_joins(frame: Any) -> bool:
    """The plan joins tables, or reads one in an `IN` / `EXISTS` subquery (a semi join):
    its microbatches then take the join update rule."""
    plan = frame.logical_plan()
    if _SUBQUERY in plan.display_indent():
        return True
    return any(type(n.to_variant()).__name__ == "Join" for n in _nodes(plan))


def check_streamable(frame: Any, sql: str) -> None:
    """Raise QueryRuleError for what ampd's streaming does not run although Amp's rules
    allow it: a join with a UNION other than top-level UNION ALL branches (a join's
    microbatch is the sum of its update terms, taken branch by branch: sql/stream_joins.py).
    The UNION is looked for in the SQL: a table of many files is itself a union in the plan."""
    from ampd.sql.stream_joins import union_branches

    if (
        has_joins(frame)
        and {"union", "intersect", "except"} & words(sql)
        and union_branches(sql) is None
    ):
        raise QueryRuleError(
            f"{_STREAMING}: ampd runs a join with a UNION in a streaming query only as "
            "top-level UNION ALL branches (not in a subquery, after a WITH, nor INTERSECT "
            "or EXCEPT)"
        )


def _non_incremental(op: str) -> str:
    return f"query contains non-incremental operation: {op}"


_BLOCKING = {"Limit": "Limit", "Sort": "Sort", "Window": "Window", "WindowExpr": "Window"}
_BLOCKING["RecursiveQuery"] = "RecursiveQuery"


def _blocking_op(node: Any, name: str) -> str | None:
    """The operation of `node` that needs rows of other microbatches, if any."""
    if name in _BLOCKING:
        return _BLOCKING[name]
    if name == "Aggregate":
        groups = node.to_variant().group_by_exprs()
        return None if groups and _is_block_num(groups[0]) else "Aggregate"
    if name == "Distinct":
        # DataFusion's Python binding shows DISTINCT ON only in the node's text.
        text = node.display()
        if text.startswith("DistinctOn: on_expr=[["):
            first = text[len("DistinctOn: on_expr=[[") :].split(",", 1)[0].split("]", 1)[0]
            if first.strip().rsplit(".", 1)[-1] == "_block_num":
                return None
        return "Distinct"
    return None


def _is_block_num(expr: Any) -> bool:
    return expr.variant_name() == "Column" and expr.to_variant().name() == "_block_num"


def plan_nodes(frame: Any) -> Iterator[Any]:
    """Every node of a planned DataFrame's logical plan."""
    return _nodes(frame.logical_plan())


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
