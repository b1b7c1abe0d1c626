"""Per-layer compression-rate strings (../shared/papers/dcff.md §4): parse, expand, keep widths.

The official code ``eval()``s strings such as ``[0.0]+([0.5]*10+[0.5]*6)*2+[0.25]*3+[0.0]``;
here a small recursive-descent parser accepts exactly that language and nothing else::

    expr  := term ('+' term)*
    term  := atom ('*' INT)* | INT '*' atom
    atom  := '[' number (',' number)* ']' | '(' expr ')'

A rate ``r`` prunes a fraction r of a layer's filters: ``kept = int(n * (1 - r))`` with Python
float arithmetic, as the official code computes it (so ``int(16 * (1 - 0.7)) == 4``).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(\S))")


class RateStringError(ValueError):
    """A malformed rate string; the message names the position and what was expected."""


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out = []
    for match in _TOKEN.finditer(text):
        number, symbol = match.groups()
        position = match.start(1) if number else match.start(2)
        if number is not None:
            out.append(("num", number, position))
        elif symbol is not None:
            if symbol not in "[](),+*":
                raise RateStringError(f"rate string {text!r}: unexpected {symbol!r} at position "
                                      f"{position}; allowed are numbers, [ ] ( ) , + *")
            out.append((symbol, symbol, position))
    out.append(("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text, self.tokens, self.i = text, _tokens(text), 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self, kind: str, what: str) -> tuple[str, str, int]:
        token = self.peek()
        if token[0] != kind:
            found = "the end" if token[0] == "end" else repr(token[1])
            raise RateStringError(f"rate string {self.text!r}: expected {what} at position "
                                  f"{token[2]}, found {found}")
        self.i += 1
        return token

    def expr(self) -> list[float]:
        values = self.term()
        while self.peek()[0] == "+":
            self.i += 1
            values = values + self.term()
        return values

    def term(self) -> list[float]:
        if self.peek()[0] == "num":  # INT '*' atom
            count = self.integer()
            self.take("*", "'*'")
            return self.atom() * count
        values = self.atom()
        while self.peek()[0] == "*":
            self.i += 1
            values = values * self.integer()
        return values

    def integer(self) -> int:
        _, text, position = self.take("num", "a repeat count")
        if not text.isdigit():
            raise RateStringError(f"rate string {self.text!r}: repeat count {text!r} at position "
                                  f"{position} must be a whole number")
        return int(text)

    def atom(self) -> list[float]:
        kind, _, position = self.peek()
        if kind == "(":
            self.i += 1
            values = self.expr()
            self.take(")", "')'")
            return values
        self.take("[", "'[' or '('")
        values = [self.rate()]
        while self.peek()[0] == ",":
            self.i += 1
            values.append(self.rate())
        self.take("]", "',' or ']'")
        return values

    def rate(self) -> float:
        _, text, position = self.take("num", "a rate")
        value = float(text)
        if not 0.0 <= value < 1.0:
            raise RateStringError(f"rate string {self.text!r}: rate {text} at position "
                                  f"{position} must be in [0, 1)")
        return value


def parse_rates(text: str, expected_length: int | None = None) -> list[float]:
    """The list a rate string denotes; checks its length when ``expected_length`` is given."""
    parser = _Parser(text)
    values = parser.expr()
    parser.take("end", "'+', '*' or the end")
    if expected_length is not None and len(values) != expected_length:
        raise RateStringError(f"rate string {text!r} has {len(values)} entries; this network "
                              f"expects {expected_length}")
    return values


def kept(width: int, rate: float) -> int:
    """Filters kept of ``width`` at pruning rate ``rate``: ``int(width * (1 - rate))``."""
    return int(width * (1 - rate))
