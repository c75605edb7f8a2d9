"""Formulas as data: a closed grammar and a closed set of transforms.

A model formula (``new_syndesmophyte ~ mri + log(crp) + offset(z) + (1|patient)``) is
text from the user, a spec file or a command line. This module reads it with its own
tokenizer and parser and accepts only:

- column names (``mri``, ``crp.mg``; any other name in backticks: `` `crp (mg/L)` ``);
- the numbers ``0`` and ``1`` (and ``-1``) as model terms, any number inside a transform;
- the operators of the formula grammar ``+ - * / : ** ^`` and parentheses;
- bar terms ``(expr | group)`` and ``(expr || group)``;
- calls of the transforms in ``FUNCTIONS`` (``C``, ``I``, ``log``, ``scale``, ``offset``,
  ``np.log``, …), with arithmetic on columns and numbers inside them.

Everything else — any other name called as a function, attribute access
(``np.f2py.os.system(...)``), Python keywords, strings outside ``C(x, Treatment('a'))``,
subscripts, lists, braces, comparisons — is refused with one ``ModelError`` naming the
term, before any value is computed. The transforms are evaluated here, by a small
table of vectorised numpy functions; the ``formulae`` library, which builds the
model matrices, is handed only a rewritten formula made of neutral column names
(``sy0``, ``sy1``, …), numbers and operators, and an empty namespace, so it never
calls anything on the user's behalf.

Column names of transformed terms are printed as lme4/patsy print them:
``log(crp)``, ``np.log(crp)``, ``I(age^2)``, ``scale(age)``, ``C(reader)[T.2]``.
"""

from __future__ import annotations

import itertools
import keyword
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from syndesmo.errors import ModelError

# --- the closed set of transforms ------------------------------------------------


def _scale_constants(x: np.ndarray) -> tuple[float, float]:
    """Mean and sample SD (n - 1) of the non-missing values, as R's ``scale`` uses."""
    centre = float(np.nanmean(x))
    n = int(np.sum(~np.isnan(x)))
    sd = float(np.sqrt(np.nansum((x - centre) ** 2) / max(1, n - 1)))
    if not np.isfinite(sd) or sd == 0.0:
        raise _NoVariation
    return centre, sd


def _center_constants(x: np.ndarray) -> tuple[float, float]:
    """Mean of the non-missing values, and 1."""
    return float(np.nanmean(x)), 1.0


def _scale(x: np.ndarray) -> np.ndarray:
    """Centre and divide by the sample SD (n - 1), ignoring missing values, as R's ``scale``."""
    centre, sd = _scale_constants(x)
    return (x - centre) / sd


def _center(x: np.ndarray) -> np.ndarray:
    """Subtract the mean of the non-missing values."""
    return x - np.nanmean(x)


class _NoVariation(Exception):
    """Raised by ``scale`` on a column with one value."""


#: Element-wise numeric transforms (one argument, a float array in and out).
ELEMENTWISE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "log1p": np.log1p,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
}
#: Numeric transforms whose result depends on the whole column.
COLUMNWISE: dict[str, Callable[[np.ndarray], np.ndarray]] = {"scale": _scale, "center": _center}
#: The constants of each column-wise transform, ``(centre, divisor)``: what a fitted
#: model keeps so that new data are transformed as the data it was fitted on (R's
#: ``makepredictcall`` does this for ``scale``).
_COLUMNWISE_CONSTANTS: dict[str, Callable[[np.ndarray], tuple[float, float]]] = {
    "scale": _scale_constants,
    "center": _center_constants,
}
#: Numeric transforms under the names a formula may use: R/lme4 spellings, and the
#: element-wise ones with the ``np.`` prefix too (as patsy/formulae users write them).
NUMERIC: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **ELEMENTWISE,
    **{f"np.{k}": v for k, v in ELEMENTWISE.items()},
    **COLUMNWISE,
}
#: Every function a formula may call: ``I`` (arithmetic as written), ``C`` (a
#: categorical term), ``offset`` (a known term of the linear predictor) and NUMERIC.
FUNCTIONS: tuple[str, ...] = (
    "C",
    "I",
    *ELEMENTWISE,
    *COLUMNWISE,
    "offset",
    *(f"np.{k}" for k in ELEMENTWISE),
)
ALLOWED_TEXT = "allowed functions: " + ", ".join(FUNCTIONS)

_PREFIX = "sy"  # neutral names handed to formulae: sy0, sy1, ...
#: What a formula handed to formulae may contain: neutral names, whole numbers, operators.
_SAFE = re.compile(r"(?:sy[0-9]+|[0-9]+|\*\*|[ +\-*/:()])*")


# --- tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One token of a formula: ``kind`` (NAME, QNAME, NUMBER, STRING, OP, END), its
    ``text`` and its ``start``/``end`` positions in the formula."""

    kind: str
    text: str
    start: int
    end: int


_OPERATORS = ("||", "**", "+", "-", "*", "/", ":", "^", "|", "(", ")", ",", "=", "~")
_REFUSED_CHARS = {
    "[": "subscripts and lists are not part of the formula grammar",
    "]": "subscripts and lists are not part of the formula grammar",
    "{": "braces are not part of the formula grammar (write I(...))",
    "}": "braces are not part of the formula grammar (write I(...))",
    ";": "';' is not part of the formula grammar",
    "#": "comments are not part of the formula grammar",
    "@": "'@' is not part of the formula grammar",
    "%": "'%' operators are not part of the formula grammar",
    "\\": "backslashes are not part of the formula grammar",
    "!": "comparisons and '!' are not part of the formula grammar",
    "<": "comparisons are not part of the formula grammar",
    ">": "comparisons are not part of the formula grammar",
    "&": "'&' is not part of the formula grammar",
    "$": "'$' is not part of the formula grammar",
}


def _is_name_char(ch: str, first: bool) -> bool:
    if ch == "_" or ch == ".":
        return True
    return ch.isalpha() if first else ch.isalnum()


def _term_at(text: str, pos: int) -> str:
    """The top-level term (between ``~`` / ``+`` outside brackets) around ``pos``."""
    depth = 0
    cuts = [-1]
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch in "+~" and depth == 0:
            cuts.append(i)
    cuts.append(len(text))
    for a, b in itertools.pairwise(cuts):
        if a < pos < b or (pos == b == len(text)):
            return text[a + 1 : b].strip() or text.strip()
    return text.strip()


def _refuse(term: str, reason: str, *, functions: bool = True) -> ModelError:
    tail = f"; {ALLOWED_TEXT}" if functions else ""
    return ModelError(f"formula term {term!r}: {reason}{tail}")


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens.

    Parameters
    ----------
    text : str
        A formula, or one term of one.

    Returns
    -------
    list of Token
        Ending with an ``END`` token.

    Raises
    ------
    ModelError
        For any character outside the grammar (brackets, braces, ``;``, invisible
        characters, …) and for attribute access after a closing parenthesis.
    """
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise _refuse(_term_at(text, i), "unterminated backtick name", functions=False)
            name = text[i + 1 : j]
            if not name.strip():
                raise _refuse(_term_at(text, i), "empty backtick name", functions=False)
            _check_visible(text, i, name)
            tokens.append(Token("QNAME", name, i, j + 1))
            i = j + 1
            continue
        if ch in "'\"":
            j = text.find(ch, i + 1)
            if j < 0:
                raise _refuse(_term_at(text, i), "unterminated text literal", functions=False)
            _check_visible(text, i, text[i + 1 : j])
            tokens.append(Token("STRING", text[i + 1 : j], i, j + 1))
            i = j + 1
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            j = i
            while j < n and (text[j].isdigit() or text[j] == "."):
                j += 1
            if j < n and text[j] in "eE":
                k = j + 1
                if k < n and text[k] in "+-":
                    k += 1
                if k < n and text[k].isdigit():
                    j = k
                    while j < n and text[j].isdigit():
                        j += 1
            number = text[i:j]
            try:
                float(number)
            except ValueError:
                raise _refuse(
                    _term_at(text, i), f"{number!r} is not a number", functions=False
                ) from None
            tokens.append(Token("NUMBER", number, i, j))
            i = j
            continue
        if _is_name_char(ch, first=True):
            j = i + 1
            while j < n and _is_name_char(text[j], first=False):
                j += 1
            if tokens and tokens[-1].text == ")" and tokens[-1].end == i and ch == ".":
                raise _refuse(_term_at(text, i), "attribute access is not allowed")
            tokens.append(Token("NAME", text[i:j], i, j))
            i = j
            continue
        for op in _OPERATORS:
            if text.startswith(op, i):
                tokens.append(Token("OP", op, i, i + len(op)))
                i += len(op)
                break
        else:
            reason = _REFUSED_CHARS.get(ch)
            if reason is None:
                code = f"U+{ord(ch):04X}"
                label = unicodedata.name(ch, "unnamed character")
                reason = f"character {ch!r} ({code} {label}) is not part of the formula grammar"
            raise _refuse(_term_at(text, i), reason, functions=False)
    tokens.append(Token("END", "", n, n))
    return tokens


def _check_visible(text: str, pos: int, value: str) -> None:
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs", "Cn") and ch not in "\t":
            raise _refuse(
                _term_at(text, pos),
                f"invisible or control character U+{ord(ch):04X} in a name",
                functions=False,
            )


# --- syntax tree -------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """Base of the syntax tree; ``start``/``end`` locate the node in the formula."""

    start: int = field(default=0, kw_only=True, compare=False)
    end: int = field(default=0, kw_only=True, compare=False)


@dataclass(frozen=True)
class Column(Node):
    """A column of the data, by name."""

    name: str


@dataclass(frozen=True)
class Number(Node):
    """A number as written (``text``) and its value."""

    text: str
    value: float


@dataclass(frozen=True)
class Text(Node):
    """A text literal: only a level in ``C(x, Treatment('level'))``."""

    value: str


@dataclass(frozen=True)
class Call(Node):
    """``func(args, key=value)``."""

    func: str
    args: tuple[Node, ...]
    kwargs: tuple[tuple[str, Node], ...] = ()


@dataclass(frozen=True)
class BinOp(Node):
    """``left op right``; ``op`` is one of ``+ - * / : ** ^``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class UnaryOp(Node):
    """``-operand`` or ``+operand``."""

    op: str
    operand: Node


@dataclass(frozen=True)
class Paren(Node):
    """``(inner)``, kept so that the formula can be written back as it was grouped."""

    inner: Node


@dataclass(frozen=True)
class Bar(Node):
    """A random-effect term ``(expr | group)`` (``double`` for ``||``)."""

    expr: Node
    group: Node
    double: bool = False


# --- parser ------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the tokens; precedence (low to high): ``+ -``, ``* /``,
    ``:``, ``** ^``, unary ``- +``, primaries."""

    def __init__(self, text: str, tokens: list[Token], context: str = "formula") -> None:
        self.text = text
        self.tokens = tokens
        self.context = context
        self.i = 0

    # helpers
    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, *ops: str) -> bool:
        tok = self.peek()
        return tok.kind == "OP" and tok.text in ops

    def error(self, tok: Token, reason: str) -> ModelError:
        if tok.kind == "STRING":
            return _refuse(
                _term_at(self.text, tok.start),
                "text literals are not allowed (only as a level in C(x, Treatment('level')))",
            )
        if tok.kind == "NAME" and keyword.iskeyword(tok.text):
            return self.keyword_error(tok)
        return ModelError(f"cannot parse {self.context} {self.text!r}: {reason}")

    def keyword_error(self, tok: Token) -> ModelError:
        return _refuse(
            _term_at(self.text, tok.start),
            f"{tok.text!r} is a Python keyword, not a column (quote a column so named "
            "in backticks)",
            functions=False,
        )

    def expect(self, op: str) -> Token:
        tok = self.peek()
        if tok.kind == "OP" and tok.text == op:
            return self.take()
        found = "the end" if tok.kind == "END" else repr(tok.text)
        raise self.error(tok, f"expected {op!r} at position {tok.start}, found {found}")

    # grammar
    def sum(self, bars: bool) -> Node:
        node = self.product(bars)
        while self.at("+", "-"):
            op = self.take().text
            right = self.product(bars)
            node = BinOp(op, node, right, start=node.start, end=right.end)
        return node

    def product(self, bars: bool) -> Node:
        node = self.interaction(bars)
        while self.at("*", "/"):
            op = self.take().text
            right = self.interaction(bars)
            node = BinOp(op, node, right, start=node.start, end=right.end)
        return node

    def interaction(self, bars: bool) -> Node:
        node = self.power(bars)
        while self.at(":"):
            self.take()
            right = self.power(bars)
            node = BinOp(":", node, right, start=node.start, end=right.end)
        return node

    def power(self, bars: bool) -> Node:
        node = self.unary(bars)
        if self.at("**", "^"):
            op = self.take().text
            right = self.unary(bars)
            node = BinOp(op, node, right, start=node.start, end=right.end)
        return node

    def unary(self, bars: bool) -> Node:
        if self.at("-", "+"):
            tok = self.take()
            operand = self.unary(bars)
            return UnaryOp(tok.text, operand, start=tok.start, end=operand.end)
        return self.primary(bars)

    def primary(self, bars: bool) -> Node:
        tok = self.take()
        if tok.kind == "NUMBER":
            return Number(tok.text, float(tok.text), start=tok.start, end=tok.end)
        if tok.kind == "QNAME":
            return Column(tok.text, start=tok.start, end=tok.end)
        if tok.kind == "STRING":
            return Text(tok.text, start=tok.start, end=tok.end)
        if tok.kind == "NAME":
            if keyword.iskeyword(tok.text):
                raise self.keyword_error(tok)
            if self.at("("):
                return self.call(tok)
            return Column(tok.text, start=tok.start, end=tok.end)
        if tok.kind == "OP" and tok.text == "(":
            if self.at(")"):
                raise self.error(self.peek(), f"empty parentheses at position {tok.start}")
            inner = self.sum(bars)
            if self.at("|", "||"):
                double = self.take().text == "||"
                if not bars:
                    raise _refuse(
                        _term_at(self.text, tok.start),
                        "a bar term (expr | group) cannot stand inside another term",
                        functions=False,
                    )
                group = self.sum(False)
                close = self.expect(")")
                return Bar(inner, group, double, start=tok.start, end=close.end)
            close = self.expect(")")
            return Paren(inner, start=tok.start, end=close.end)
        found = "the end of the formula" if tok.kind == "END" else repr(tok.text)
        raise self.error(tok, f"unexpected {found} at position {tok.start}")

    def call(self, name: Token) -> Call:
        self.expect("(")
        args: list[Node] = []
        kwargs: list[tuple[str, Node]] = []
        if not self.at(")"):
            while True:
                tok = self.peek()
                nxt = self.tokens[self.i + 1]
                if tok.kind == "NAME" and nxt.kind == "OP" and nxt.text == "=":
                    self.i += 2
                    kwargs.append((tok.text, self.sum(False)))
                else:
                    if kwargs:
                        raise self.error(tok, "a positional argument follows a keyword argument")
                    args.append(self.sum(False))
                if not self.at(","):
                    break
                self.take()
        close = self.expect(")")
        return Call(name.text, tuple(args), tuple(kwargs), start=name.start, end=close.end)


def _parse_side(text: str, tokens: list[Token], bars: bool, context: str = "formula") -> Node:
    parser = _Parser(text, tokens, context)
    node = parser.sum(bars)
    tok = parser.peek()
    if tok.kind != "END":
        if tok.kind == "NAME" and tok.text[0] == ".":
            raise _refuse(_term_at(text, tok.start), "attribute access is not allowed")
        if tok.kind == "OP" and tok.text == "(":
            raise _refuse(
                _term_at(text, tok.start),
                "only the allowed functions can be called, by name",
            )
        raise parser.error(tok, f"unexpected {tok.text!r} at position {tok.start}")
    return node


# --- the parsed formula -------------------------------------------------------------


@dataclass
class Formula:
    """A checked formula: response, model terms, offsets and bar terms.

    ``response`` is the response column, ``cbind`` the two columns of
    ``cbind(successes, failures)`` (then ``response`` is the first), ``fixed`` the
    right-hand side without offsets and bars as signed additive terms, ``offsets``
    the arguments of the ``offset()`` terms, ``bars`` the random-effect terms and
    ``columns`` every column named anywhere, in order of appearance.
    """

    text: str
    response: str
    cbind: tuple[str, str] | None
    fixed: list[tuple[str, Node]]
    offsets: list[Node]
    bars: list[Bar]
    columns: list[str]

    def atoms(self) -> list[Node]:
        """The distinct columns and calls that are terms (or parts of interactions) of the
        fixed effects, in order of appearance."""
        seen: dict[str, Node] = {}
        for _, node in self.fixed:
            for atom in _atoms(node):
                seen.setdefault(label(atom), atom)
        return list(seen.values())


def parse_formula(text: str) -> Formula:
    """Parse and check a formula; nothing is evaluated here.

    Parameters
    ----------
    text : str
        An lme4-style formula, ``response ~ terms``.

    Returns
    -------
    Formula
        The response, fixed terms, offsets, bar terms and columns named.

    Raises
    ------
    ModelError
        Naming the term, for anything outside the grammar or the closed set of
        functions ``FUNCTIONS``: ``formula term 'np.f2py.os.system(...)': attribute
        access is not allowed; allowed functions: C, I, log, …``.
    """
    if not isinstance(text, str) or "~" not in text:
        raise ModelError(f"formula must be a string like 'y ~ x + (1|patient)', got {text!r}")
    tokens = tokenize(text)
    tildes = [k for k, t in enumerate(tokens) if t.kind == "OP" and t.text == "~"]
    if len(tildes) > 1:
        raise ModelError(f"cannot parse formula {text!r}: it has more than one '~'")
    k = tildes[0]
    if k == 0:
        raise ModelError(f"formula {text!r} has no response on the left of '~'")
    end = tokens[k]
    lhs_tokens = [*tokens[:k], Token("END", "", end.start, end.start)]
    lhs = _parse_side(text, lhs_tokens, bars=False)
    rhs_tokens = tokens[k + 1 :]
    if rhs_tokens[0].kind == "END":
        raise ModelError(f"cannot parse formula {text!r}: nothing on the right of '~'")
    rhs = _parse_side(text, rhs_tokens, bars=True)

    response, cbind = _response(text, lhs)
    fixed: list[tuple[str, Node]] = []
    offsets: list[Node] = []
    bars: list[Bar] = []
    for sign, node in _additive(rhs, "+"):
        if isinstance(node, Bar):
            if sign == "-":
                raise _refuse(_src(text, node), "a bar term cannot be removed with '-'")
            _check_model(text, node.expr, top=False)
            _check_group(text, node)
            bars.append(node)
        elif isinstance(node, Call) and node.func == "offset":
            if sign == "-":
                raise _refuse(_src(text, node), "an offset cannot be removed with '-'")
            offsets.append(_offset_argument(text, node))
        else:
            _check_model(text, node, top=True)
            fixed.append((sign, node))
    columns = list(dict.fromkeys(_columns(lhs) + _columns(rhs)))
    return Formula(text, response, cbind, fixed, offsets, bars, columns)


def check_term(text: str, what: str = "covariate") -> list[str]:
    """Check one model term given on its own (a spec covariate, a CLI option).

    Parameters
    ----------
    text : str
        A column name or an allowed transform of one column: ``crp``, ``log(crp)``,
        ``scale(age)``, ``C(reader)``, `` `crp (mg/L)` ``.
    what : str
        What the term is, for messages (``covariate``, ``treatment``, …).

    Returns
    -------
    list of str
        The column it reads (one).

    Raises
    ------
    ModelError
        Naming the term, when it is anything else.
    """
    if not isinstance(text, str) or not text.strip():
        raise ModelError(f"{what} must be a non-empty column name, got {text!r}")
    tokens = tokenize(text)
    depth = 0
    for tok in tokens:
        if tok.kind == "OP" and tok.text == "~":
            raise _refuse(text, f"a {what} is one term, not a formula", functions=False)
        depth += {"(": 1, ")": -1}.get(tok.text, 0) if tok.kind == "OP" else 0
        if tok.kind == "OP" and tok.text == "," and depth == 0:
            raise _refuse(
                text,
                f"a {what} is one column (or a transform of one); give several as "
                'separate list items, e.g. ["arm", "age"]',
                functions=False,
            )
    node = _parse_side(text, tokens, bars=False, context=what)
    if isinstance(node, Call) and node.func == "offset":
        raise _refuse(text, f"an offset is not a {what}", functions=False)
    if not isinstance(node, Column | Call):
        raise _refuse(
            text,
            f"a {what} must be a column name or an allowed transform of one column "
            "(write a name that is not a plain word in backticks)",
        )
    _check_model(text, node, top=True)
    cols = list(dict.fromkeys(_columns(node)))
    if len(cols) != 1:
        raise _refuse(text, f"a {what} must read exactly one column, this reads {len(cols)}")
    return cols


def covariate_columns(terms: Sequence[str], what: str = "covariate") -> list[str]:
    """The distinct columns several covariate terms read, each checked by ``check_term``.

    Parameters
    ----------
    terms : sequence of str
        Covariate terms, e.g. ``["arm", "log(crp)", "scale(crp)"]``.
    what : str
        What the terms are, for messages.

    Returns
    -------
    list of str
        The columns read, in order, each once: ``["arm", "crp"]``.

    Raises
    ------
    ModelError
        Naming the first term that is not a column or an allowed transform of one.
    """
    out: list[str] = []
    for term in terms:
        out.extend(check_term(term, what))
    return list(dict.fromkeys(out))


# --- checks --------------------------------------------------------------------------


def _src(text: str, node: Node) -> str:
    return text[node.start : node.end].strip() or label(node)


def _call_text(node: Call) -> str:
    return f"{node.func}(...)"


def _response(text: str, lhs: Node) -> tuple[str, tuple[str, str] | None]:
    if isinstance(lhs, Column):
        _check_name(text, lhs)
        return lhs.name, None
    if isinstance(lhs, Call) and lhs.func == "cbind":
        if len(lhs.args) == 2 and not lhs.kwargs and all(isinstance(a, Column) for a in lhs.args):
            a, b = (str(x.name) for x in lhs.args)  # type: ignore[attr-defined]
            return a, (a, b)
        raise ModelError(
            f"cbind() in the response must name two columns, cbind(successes, failures); "
            f"got {_src(text, lhs)!r}. For other forms pass the number of trials as trials="
        )
    if isinstance(lhs, Call):
        _check_call(text, lhs)
    raise _refuse(
        _src(text, lhs),
        "the response must be a column or cbind(successes, failures)",
        functions=False,
    )


def _additive(node: Node, sign: str) -> Iterator[tuple[str, Node]]:
    """The signed terms of a sum, looking through parentheses reached with ``+``."""
    if isinstance(node, BinOp) and node.op in ("+", "-"):
        yield from _additive(node.left, sign)
        right_sign = node.op if sign == "+" else ("-" if node.op == "+" else "+")
        yield from _additive(node.right, right_sign)
    elif isinstance(node, Paren) and sign == "+":
        yield from _additive(node.inner, sign)
    elif isinstance(node, UnaryOp) and node.op == "-" and not isinstance(node.operand, Number):
        yield from _additive(node.operand, "-" if sign == "+" else "+")
    else:
        yield sign, node


def _check_model(text: str, node: Node, *, top: bool) -> None:
    """A model term: columns, 0/1, formula operators and calls of allowed functions."""
    if isinstance(node, Column):
        _check_name(text, node)
    elif isinstance(node, Number):
        if node.value not in (0.0, 1.0):
            raise _refuse(
                _src(text, node),
                "a number in a formula can only be 0 or 1 (no intercept / intercept); "
                "arithmetic goes inside I(...)",
                functions=False,
            )
    elif isinstance(node, UnaryOp):
        if not (isinstance(node.operand, Number) and node.operand.value in (0.0, 1.0)):
            _check_model(text, node.operand, top=False)
    elif isinstance(node, BinOp):
        if node.op in ("**", "^"):
            _check_model(text, node.left, top=False)
            if not (
                isinstance(node.right, Number)
                and node.right.value == int(node.right.value)
                and node.right.value >= 1
            ):
                raise _refuse(
                    _src(text, node),
                    "the power of a term must be a whole number (interactions up to that "
                    "order); write I(x^2) for a square",
                    functions=False,
                )
            return
        _check_model(text, node.left, top=False)
        _check_model(text, node.right, top=False)
    elif isinstance(node, Paren):
        _check_model(text, node.inner, top=False)
    elif isinstance(node, Bar):
        raise _refuse(_src(text, node), "a bar term must be a term of its own", functions=False)
    elif isinstance(node, Call):
        if node.func == "offset":
            raise _refuse(
                _src(text, node),
                "offset(...) must be a term of its own, added with '+'",
                functions=False,
            )
        _check_call(text, node)
        if node.func == "C":
            _check_categorical(text, node)
        else:
            _check_numeric_call(text, node)
    elif isinstance(node, Text):
        raise _refuse(
            _src(text, node),
            "text literals are not allowed (only as a level in C(x, Treatment('level')))",
        )
    else:  # pragma: no cover - every node type is handled above
        raise ModelError(f"internal: unknown formula node {node!r}")


def _check_name(text: str, node: Column) -> None:
    parts = node.name.split(".")
    raw = text[node.start : node.end]
    if raw.startswith("`"):
        return
    if any(p.startswith("__") for p in parts):
        raise _refuse(_src(text, node), "attribute access is not allowed")
    if node.name == ".":
        raise _refuse(".", "'.' (all other columns) is not supported; name the columns")


def _check_call(text: str, node: Call) -> None:
    """The function must be one of FUNCTIONS, spelled exactly."""
    name = node.func
    if name in FUNCTIONS:
        return
    if "." in name.strip("."):
        raise _refuse(_call_text(node), "attribute access is not allowed")
    raise _refuse(_call_text(node), f"{name!r} is not an allowed function")


def _check_arity(text: str, node: Call, n_args: int = 1) -> None:
    if len(node.args) != n_args or node.kwargs:
        raise _refuse(
            _src(text, node),
            f"{node.func}() takes exactly {n_args} argument{'s' if n_args != 1 else ''}",
            functions=False,
        )


def _check_numeric_call(text: str, node: Call) -> None:
    _check_arity(text, node)
    _check_arithmetic(text, node.args[0])


def _check_arithmetic(text: str, node: Node) -> None:
    """Inside a transform: columns, numbers, + - * / ** ^, unary minus, numeric calls."""
    if isinstance(node, Column):
        _check_name(text, node)
    elif isinstance(node, Number):
        return
    elif isinstance(node, UnaryOp):
        _check_arithmetic(text, node.operand)
    elif isinstance(node, Paren):
        _check_arithmetic(text, node.inner)
    elif isinstance(node, BinOp):
        if node.op == ":":
            raise _refuse(
                _src(text, node),
                "':' (interaction) cannot be used inside a transform; use '*' for a product",
                functions=False,
            )
        _check_arithmetic(text, node.left)
        _check_arithmetic(text, node.right)
    elif isinstance(node, Call):
        _check_call(text, node)
        if node.func in ("C", "offset"):
            raise _refuse(
                _src(text, node),
                f"{node.func}() cannot be used inside another transform",
                functions=False,
            )
        _check_numeric_call(text, node)
    elif isinstance(node, Text):
        raise _refuse(
            _src(text, node),
            "text literals are not allowed (only as a level in C(x, Treatment('level')))",
        )
    else:
        raise _refuse(_src(text, node), "not allowed inside a transform", functions=False)


def _check_categorical(text: str, node: Call) -> None:
    """``C(col)``, ``C(col, Treatment(level))`` or ``C(col, Treatment(reference=level))``."""
    usage = "write C(column) or C(column, Treatment('reference level'))"
    if node.kwargs or not 1 <= len(node.args) <= 2 or not isinstance(node.args[0], Column):
        raise _refuse(_src(text, node), usage, functions=False)
    _check_name(text, node.args[0])
    if len(node.args) == 2:
        _treatment_level(text, node.args[1], usage)


def _treatment_level(text: str, node: Node, usage: str) -> Number | Text:
    ok = isinstance(node, Call) and node.func == "Treatment"
    if ok:
        assert isinstance(node, Call)
        values = list(node.args) + [v for k, v in node.kwargs if k == "reference"]
        extra = [k for k, _ in node.kwargs if k != "reference"]
        if len(values) == 1 and not extra and isinstance(values[0], Number | Text):
            return values[0]
        if (
            len(values) == 1
            and not extra
            and isinstance(values[0], UnaryOp)
            and isinstance(values[0].operand, Number)
        ):
            inner = values[0].operand
            return Number(f"-{inner.text}", -inner.value)
    raise _refuse(_src(text, node), usage, functions=False)


def _check_group(text: str, bar: Bar) -> None:
    def walk(node: Node) -> None:
        if isinstance(node, Column):
            _check_name(text, node)
        elif isinstance(node, BinOp) and node.op in (":", "/"):
            walk(node.left)
            walk(node.right)
        elif isinstance(node, Paren):
            walk(node.inner)
        else:
            if isinstance(node, Call):
                _check_call(text, node)
            raise _refuse(
                _src(text, bar),
                "the grouping factor of a bar term must be a column (or a:b, a/b of columns)",
                functions=False,
            )

    walk(bar.group)


def _offset_argument(text: str, node: Call) -> Node:
    _check_arity(text, node)
    _check_arithmetic(text, node.args[0])
    return node.args[0]


# --- walking the tree ----------------------------------------------------------------


def _columns(node: Node) -> list[str]:
    if isinstance(node, Column):
        return [node.name]
    if isinstance(node, Call):
        out: list[str] = []
        for a in node.args:
            out += _columns(a)
        for _, v in node.kwargs:
            if not isinstance(v, Call):  # Treatment(...) names a level, not a column
                out += _columns(v)
        return out
    if isinstance(node, BinOp):
        return _columns(node.left) + _columns(node.right)
    if isinstance(node, UnaryOp):
        return _columns(node.operand)
    if isinstance(node, Paren):
        return _columns(node.inner)
    if isinstance(node, Bar):
        return _columns(node.expr) + _columns(node.group)
    return []


def _atoms(node: Node) -> Iterator[Node]:
    if isinstance(node, Column | Call):
        yield node
    elif isinstance(node, BinOp):
        yield from _atoms(node.left)
        if node.op not in ("**", "^"):
            yield from _atoms(node.right)
    elif isinstance(node, UnaryOp):
        yield from _atoms(node.operand)
    elif isinstance(node, Paren):
        yield from _atoms(node.inner)


def _plain(name: str) -> bool:
    return (
        bool(name)
        and _is_name_char(name[0], first=True)
        and all(_is_name_char(c, first=False) for c in name[1:])
        and not keyword.iskeyword(name)
        and not name[0].isdigit()
    )


def label(node: Node) -> str:
    """How a term is printed: as lme4/patsy print it (``log(crp)``, ``I(age^2)``,
    ``C(arm, Treatment('placebo'))``); names that are not plain words in backticks."""
    if isinstance(node, Column):
        return node.name if _plain(node.name) else f"`{node.name}`"
    if isinstance(node, Number):
        return node.text
    if isinstance(node, Text):
        return "'" + node.value.replace("'", "\\'") + "'"
    if isinstance(node, Call):
        parts = [label(a) for a in node.args] + [f"{k}={label(v)}" for k, v in node.kwargs]
        return f"{node.func}({', '.join(parts)})"
    if isinstance(node, BinOp):
        if node.op in ("^", ":", "/"):  # as R prints them: I(age^2), a:b, g/h
            return f"{label(node.left)}{node.op}{label(node.right)}"
        return f"{label(node.left)} {node.op} {label(node.right)}"
    if isinstance(node, UnaryOp):
        return f"{node.op}{label(node.operand)}"
    if isinstance(node, Paren):
        return f"({label(node.inner)})"
    if isinstance(node, Bar):
        return f"({label(node.expr)} {'||' if node.double else '|'} {label(node.group)})"
    raise ModelError(f"internal: unknown formula node {node!r}")  # pragma: no cover


def bar_label(bar: Bar) -> str:
    """A bar term as lme4 users read it: ``(1|patient)``, ``(mri|patient)``.

    The random-effect expression is shown without its ``0 +``/``1 +`` parts when it
    has other terms, as formulae and lme4's printouts do.
    """
    terms = [n for _, n in _additive(bar.expr, "+")]
    kept = [n for n in terms if not isinstance(n, Number)]
    expr = " + ".join(label(n) for n in kept) if kept else label(bar.expr)
    return f"({expr}{'||' if bar.double else '|'}{label(bar.group)})"


# --- evaluation --------------------------------------------------------------------


def _column_values(data: pd.DataFrame, node: Column, term: str) -> np.ndarray:
    s = data[node.name]
    if s.dtype == bool or pd.api.types.is_bool_dtype(s.dtype):
        return s.astype(float).to_numpy()
    if not pd.api.types.is_numeric_dtype(s.dtype):
        sample = [v for v in s.dropna().unique()[:3]]
        raise ModelError(
            f"formula term {term!r}: column {node.name!r} is not numeric "
            f"(values like {sample}); use it as a term of its own or in C({label(node)})"
        )
    return s.to_numpy(dtype=float, na_value=np.nan)


def evaluate(
    node: Node,
    data: pd.DataFrame,
    term: str | None = None,
    state: dict[str, tuple[float, float]] | None = None,
) -> np.ndarray:
    """The values of an arithmetic expression (checked by ``parse_formula``) on ``data``.

    Only the operators of the grammar and the functions in ``NUMERIC`` (and ``I``)
    are applied, element-wise over float arrays; missing values stay NaN.

    Parameters
    ----------
    node : Node
        A checked expression (the argument of ``I``, ``log``, ``offset``, …).
    data : pandas.DataFrame
        Holds the columns the expression reads.
    term : str, optional
        The term to name in errors (default: the expression's label).
    state : dict, optional
        The constants ``(centre, divisor)`` of the column-wise transforms (``scale``,
        ``center``) by their label: a transform found there is applied with them (new
        data transformed as the data a model was fitted on); one not found is computed
        from ``data`` and its constants are added.

    Returns
    -------
    numpy.ndarray
        Float values, one per row of ``data``.

    Raises
    ------
    ModelError
        When a column is not numeric, or ``scale`` meets a column without variation.
    """
    term = term or label(node)
    with np.errstate(all="ignore"):
        return _evaluate(node, data, term, {} if state is None else state)


def _evaluate(
    node: Node, data: pd.DataFrame, term: str, state: dict[str, tuple[float, float]]
) -> np.ndarray:
    n = len(data)
    if isinstance(node, Column):
        return _column_values(data, node, term)
    if isinstance(node, Number):
        return np.full(n, node.value)
    if isinstance(node, Paren):
        return _evaluate(node.inner, data, term, state)
    if isinstance(node, UnaryOp):
        value = _evaluate(node.operand, data, term, state)
        return -value if node.op == "-" else value
    if isinstance(node, BinOp):
        a = _evaluate(node.left, data, term, state)
        b = _evaluate(node.right, data, term, state)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        if node.op == "/":
            return a / b
        if node.op in ("**", "^"):
            return np.power(a, b)
    if isinstance(node, Call):
        arg = _evaluate(node.args[0], data, term, state)
        if node.func == "I":
            return arg
        if node.func in _COLUMNWISE_CONSTANTS:
            key = label(node)
            if key not in state:
                try:
                    state[key] = _COLUMNWISE_CONSTANTS[node.func](arg)
                except _NoVariation:
                    raise ModelError(
                        f"formula term {term!r}: {label(node.args[0])} does not vary, so "
                        f"{node.func}() would divide by an SD of 0"
                    ) from None
            centre, divisor = state[key]
            return (arg - centre) / divisor
        fn = NUMERIC.get(node.func)
        if fn is not None:
            try:
                return np.asarray(fn(arg), dtype=float)
            except _NoVariation:
                raise ModelError(
                    f"formula term {term!r}: {label(node.args[0])} does not vary, so "
                    f"{node.func}() would divide by an SD of 0"
                ) from None
    raise ModelError(f"formula term {term!r}: cannot evaluate {label(node)}")  # pragma: no cover


def categorical(node: Call, data: pd.DataFrame, term: str) -> pd.Series:
    """``C(col[, Treatment(level)])`` as a pandas ordered Categorical, the reference first.

    Levels keep a Categorical's own order, else they are the sorted distinct values.
    """
    col = node.args[0]
    assert isinstance(col, Column)
    s = data[col.name]
    if isinstance(s.dtype, pd.CategoricalDtype):
        levels = list(s.cat.categories)
    else:
        levels = sorted(s.dropna().unique().tolist(), key=_sort_key)
    if len(node.args) == 2:
        ref = _treatment_level("", node.args[1], "")
        wanted = ref.value
        match = [lv for lv in levels if lv == wanted or str(lv) == str(wanted)]
        if not match:
            raise ModelError(
                f"formula term {term!r}: reference level {label(ref)} is not a value of "
                f"{col.name!r}; its values are {', '.join(map(str, levels[:10]))}"
            )
        reference = match[0]
        levels = [reference] + [lv for lv in levels if lv != reference]
    return pd.Series(pd.Categorical(s, categories=levels, ordered=True), index=data.index)


def _sort_key(v: object) -> tuple[int, object]:
    if isinstance(v, int | float | np.integer | np.floating):
        return (0, float(v))
    return (1, str(v))


# --- the formula handed to formulae -------------------------------------------------


@dataclass
class Prepared:
    """What the model matrices are built from.

    ``formula`` is the fixed part of the model for formulae, made only of neutral
    names (``sy0``…), 0/1 and operators; ``frame`` holds those columns for every row
    of the data; ``labels`` maps each neutral name to the term's printed label;
    ``offset`` is the sum of the offset terms (``None`` without one); ``computed``
    names the columns that are transforms (to be checked for non-finite values).
    """

    formula: str
    frame: pd.DataFrame
    labels: dict[str, str]
    offset: np.ndarray | None
    computed: list[str] = field(default_factory=list)
    state: dict[str, tuple[float, float]] = field(default_factory=dict)


def prepare(
    parsed: Formula, data: pd.DataFrame, state: dict[str, tuple[float, float]] | None = None
) -> Prepared:
    """Evaluate the terms of ``parsed`` on every row of ``data``.

    All rows are used, as R's ``model.frame`` evaluates ``scale(x)`` before rows with
    missing values are dropped; the caller keeps the complete rows.

    Parameters
    ----------
    parsed : Formula
        A formula from ``parse_formula`` (checked, nothing evaluated yet).
    data : pandas.DataFrame
        Holds every column ``parsed.columns`` names.
    state : dict, optional
        The constants of the column-wise transforms of a fitted model
        (``Prepared.state`` of its data), to transform new data the same way; by
        default they are computed from ``data``.

    Returns
    -------
    Prepared
        The neutral formula and frame for formulae, the labels, the offset and the
        constants of the column-wise transforms (``state``).

    Raises
    ------
    ModelError
        When a transform meets a column that is not numeric, or ``scale`` one that
        does not vary.
    """
    names: dict[str, str] = {}  # label -> neutral name
    columns: dict[str, pd.Series] = {}
    labels: dict[str, str] = {}
    computed: list[str] = []
    state = {} if state is None else dict(state)
    for atom in parsed.atoms():
        key = label(atom)
        neutral = f"{_PREFIX}{len(names)}"
        names[key] = neutral
        labels[neutral] = key
        if isinstance(atom, Column):  # the column as it is (its dtype decides its coding)
            s = data[atom.name].reset_index(drop=True)
            if not isinstance(s.dtype, pd.CategoricalDtype) and pd.api.types.is_bool_dtype(s.dtype):
                s = s.astype(float)  # booleans are numeric 0/1
            columns[neutral] = s
        elif isinstance(atom, Call) and atom.func == "C":
            columns[neutral] = categorical(atom, data, key).reset_index(drop=True)
        else:
            columns[neutral] = pd.Series(evaluate(atom, data, key, state))
            computed.append(neutral)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(len(data)))
    rhs = _render_fixed(parsed.fixed, names)
    offset = None
    for node in parsed.offsets:
        value = evaluate(node, data, f"offset({label(node)})", state)
        offset = value if offset is None else offset + value
    return Prepared(
        formula=rhs, frame=frame, labels=labels, offset=offset, computed=computed, state=state
    )


def _render(node: Node, names: dict[str, str]) -> str:
    if isinstance(node, Column | Call):
        return names[label(node)]
    if isinstance(node, Number):  # 0/1, or the whole-number power of a term
        return str(int(node.value))
    if isinstance(node, UnaryOp):
        return f"{node.op}{_render(node.operand, names)}"
    if isinstance(node, Paren):
        return f"({_render(node.inner, names)})"
    if isinstance(node, BinOp):
        op = "**" if node.op == "^" else node.op
        return f"{_render(node.left, names)} {op} {_render(node.right, names)}"
    raise ModelError(f"internal: cannot render {node!r}")  # pragma: no cover


def _render_fixed(fixed: list[tuple[str, Node]], names: dict[str, str]) -> str:
    parts: list[str] = []
    for sign, node in fixed:
        text = _render(node, names)
        if not parts:
            parts.append(text if sign == "+" else f"-{text}")
        else:
            parts.append(f"{sign} {text}")
    rhs = " ".join(parts) if parts else "1"
    if not _SAFE.fullmatch(rhs):  # defence in depth: nothing but neutral names reaches formulae
        raise ModelError(f"internal: unsafe formula {rhs!r} refused")
    return rhs
