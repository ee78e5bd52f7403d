"""Finding function calls in SQL text: a tokenizer that knows string literals, quoted
identifiers and comments (so a name inside any of them is never taken for a call), and
the calls of given functions with their arguments split at the top-level commas."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPACE = re.compile(r"\s+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_PREFIXES = ("e", "x", "n", "b", "r")


@dataclass(frozen=True)
class Token:
    kind: str  # space comment string prefixed dollar ident qident number punct
    start: int
    end: int
    text: str
    value: str = ""  # a string literal's value; an identifier's name

    @property
    def trivia(self) -> bool:
        return self.kind in ("space", "comment")


def _quoted(sql: str, start: int, quote: str) -> int:
    """End of the quoted run starting at `start` (doubled quotes escape the quote)."""
    i = start + 1
    while True:
        j = sql.find(quote, i)
        if j < 0:
            return len(sql)
        if sql.startswith(quote * 2, j):
            i = j + 2
            continue
        return j + 1


def tokenize(sql: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            end = _SPACE.match(sql, i).end()
            tokens.append(Token("space", i, end, sql[i:end]))
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end + 1
            tokens.append(Token("comment", i, end, sql[i:end]))
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            tokens.append(Token("comment", i, j, sql[i:j]))
            end = j
        elif c == "'":
            end = _quoted(sql, i, "'")
            body = (
                sql[i + 1 : end - 1] if sql[end - 1 : end] == "'" and end - i >= 2 else sql[i + 1 :]
            )
            tokens.append(Token("string", i, end, sql[i:end], body.replace("''", "'")))
        elif c.lower() in _PREFIXES and sql[i + 1 : i + 2] == "'":
            end = _quoted(sql, i + 1, "'")
            tokens.append(Token("prefixed", i, end, sql[i:end], c.lower()))
        elif c == '"' or c == "`":
            end = _quoted(sql, i, c)
            body = sql[i + 1 : end - 1].replace(c * 2, c)
            tokens.append(Token("qident", i, end, sql[i:end], body))
        elif c == "$" and (m := _DOLLAR.match(sql, i)):
            close = sql.find(m.group(0), m.end())
            end = n if close < 0 else close + len(m.group(0))
            tokens.append(Token("dollar", i, end, sql[i:end]))
        elif c.isalpha() or c == "_":
            end = _IDENT.match(sql, i).end()
            tokens.append(Token("ident", i, end, sql[i:end], sql[i:end].lower()))
        elif c.isdigit() or (c == "." and sql[i + 1 : i + 2].isdigit()):
            end = _NUMBER.match(sql, i).end()
            tokens.append(Token("number", i, end, sql[i:end]))
        else:
            end = i + 1
            tokens.append(Token("punct", i, end, c))
        i = end
    return tokens


@dataclass(frozen=True)
class Call:
    name: str  # the function name as DataFusion resolves it
    token: Token  # the name token, which a rewrite replaces
    args: list[list[Token]]  # each argument's tokens, trivia dropped
    # `.name` after `(call)`: DataFusion's SQL has no dot access on an expression, so a
    # rewrite turns it into `['name']` (Amp's docs write `(evm_decode_params(...)).to`).
    field: tuple[Token, Token] | None = None  # the dot and the name


_OPEN, _CLOSE = "([{", ")]}"


def call_args(tokens: list[Token], i: int) -> tuple[list[list[Token]], int]:
    """The arguments of the call whose name is `tokens[i]` (its `(` next), each one's
    tokens, split at the top-level commas; and the index of its closing parenthesis."""
    args: list[list[Token]] = []
    current: list[Token] = []
    depth = 0
    close = len(tokens)
    for j, u in enumerate(tokens[i + 1 :], start=i + 1):
        if u.kind == "punct" and u.text in _OPEN:
            depth += 1
            if depth == 1:
                continue
        elif u.kind == "punct" and u.text in _CLOSE:
            depth -= 1
            if depth == 0:
                close = j
                break
        elif u.kind == "punct" and u.text == "," and depth == 1:
            args.append(current)
            current = []
            continue
        current.append(u)
    if current or args:
        args.append(current)
    return args, close


def field_after(tokens: list[Token], first: int, close: int) -> tuple[Token, Token] | None:
    """The `.name` after `(call)`, for a call from `tokens[first]` to its closing
    parenthesis `tokens[close]` (see Call.field); None when there is none."""
    after = tokens[close + 1 : close + 4]
    if (
        first > 0
        and tokens[first - 1].text == "("
        and [u.text for u in after[:2]] == [")", "."]
        and len(after) == 3
        and after[2].kind in ("ident", "qident")
    ):
        return (after[1], after[2])
    return None


def calls(sql: str, names: set[str] | frozenset[str]) -> list[Call]:
    """Every call of a function in `names` (lowercase), outermost first."""
    tokens = [t for t in tokenize(sql) if not t.trivia]
    found: list[Call] = []
    for i, t in enumerate(tokens):
        if t.kind == "ident":
            name = t.value
        elif t.kind == "qident":
            name = t.value
        else:
            continue
        if name not in names or i + 1 >= len(tokens) or tokens[i + 1].text != "(":
            continue
        if i > 0 and tokens[i - 1].text == ".":
            continue
        args, close = call_args(tokens, i)
        found.append(Call(name, t, args, field_after(tokens, i, close)))
    return found


@dataclass(frozen=True)
class Literal:
    """What an argument is when it is a single literal: kind is string, number, null,
    boolean or binary; text the string value (or the number's text)."""

    kind: str
    text: str = ""

    @property
    def df_type(self) -> str:
        """The type DataFusion gives the literal, by name."""
        if self.kind == "string":
            return "Utf8"
        if self.kind == "null":
            return "Null"
        if self.kind == "boolean":
            return "Boolean"
        if self.kind == "binary":
            return "Binary"
        digits = self.text.lstrip("-")
        if digits.isdigit():
            value = int(self.text)
            if -(1 << 63) <= value < (1 << 63):
                return "Int64"
            return "UInt64" if 0 <= value < (1 << 64) else "Float64"
        return "Float64"


def literal(arg: list[Token]) -> Literal | None:
    """`arg` as a literal (redundant parentheses allowed), or None for an expression."""
    while len(arg) >= 2 and arg[0].text == "(" and arg[-1].text == ")" and _wraps(arg):
        arg = arg[1:-1]
    if len(arg) == 1:
        t = arg[0]
        if t.kind == "string":
            return Literal("string", t.value)
        if t.kind == "number":
            return Literal("number", t.text)
        if t.kind == "prefixed" and t.value == "x":
            return Literal("binary")
        if t.kind == "ident" and t.value == "null":
            return Literal("null")
        if t.kind == "ident" and t.value in ("true", "false"):
            return Literal("boolean", t.value)
    if len(arg) == 2 and arg[0].text == "-" and arg[1].kind == "number":
        return Literal("number", "-" + arg[1].text)
    return None


def _wraps(arg: list[Token]) -> bool:
    """Whether the first token's parenthesis closes at the last token."""
    depth = 0
    for k, t in enumerate(arg):
        if t.kind == "punct" and t.text in _OPEN:
            depth += 1
        elif t.kind == "punct" and t.text in _CLOSE:
            depth -= 1
            if depth == 0:
                return k == len(arg) - 1
    return False
