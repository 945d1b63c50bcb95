"""Read and write MATPOWER case files (``.m``) without MATLAB.

:func:`parse_matpower` is a small parser for the subset of MATLAB that case files use:
a ``function`` header, assignments of numbers, quoted strings, numeric matrices
(``[...]``) and cell arrays of strings (``{...}``), ``%`` and ``%{ ... %}`` comments and
``...`` continuations. Nothing is evaluated: a matrix holds literal numbers only, so
``[1 - 2]`` is an error rather than ``-1``. Both the version-2 struct form
(``function mpc = case9`` with ``mpc.bus = [...]``) and the version-1 form
(``function [baseMVA, bus, gen, branch, areas, gencost] = case9`` with bare
assignments) are read; as in MATLAB, only the function's outputs count.

The result is a PYPOWER-style dict. Every problem raises
:class:`~gridphysics.errors.MatpowerParseError`, naming the line where possible.
:func:`format_matpower` writes a version-2 file that reads back bit-exactly.
"""

from __future__ import annotations

import bisect
import math
import os
import re
import stat
from collections.abc import Callable
from typing import Any

import numpy as np

from gridphysics.errors import CaseFileError, CaseFormatError, InputTypeError, MatpowerParseError

__all__ = ["format_matpower", "load_matpower_dict", "parse_matpower", "write_matpower"]

_REQUIRED = ("baseMVA", "bus", "gen", "branch")
_TABLES = ("bus", "gen", "branch", "gencost", "areas")
_KNOWN = frozenset((*_REQUIRED, "version", "gencost", "areas", "bus_name"))
_MIN_COLS = {"bus": 13, "gen": 10, "branch": 11}

# Unambiguous (no two ways to split a run of digits), so a failing match is linear in the
# token's length: ``[0-9]+\.?[0-9]*`` backtracks quadratically on "999...9x".
_NUM = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eEdD][+-]?[0-9]+)?|Inf|inf|NaN|nan)"
)
_D_TO_E = str.maketrans("dD", "ee")
#: The largest case file (characters) the parser accepts: MATPOWER's largest published
#: grids are about 10 MB; a larger file is refused with a MatpowerParseError.
MAX_CASE_CHARS = 200_000_000
#: The most top-level statements (assignments, commands) a case may hold. A MATPOWER
#: case has a few dozen, each table one statement however many rows it has; each costs
#: Python work, so a file of tiny statements would be read at a few MB/s: this bounds
#: it to a fraction of a second.
MAX_STATEMENTS = 10_000
_LINE_SPECIAL = re.compile(r"[%'\"]|\.\.\.")
_SPECIAL = re.compile(r"[\[\](){}'\"]")
_STMT_SPECIAL = re.compile(r"[\[\](){}'\";,\n]")
_ROW = re.compile(r"[^;\n]+")
_TOKEN = re.compile(r"[^\s;]+")
_EMPTY_ITEM = re.compile(r"(?:\A|[;\n,])[^\S\n]*,")
_SEP = re.compile(r"[\s;,]*")
_FUNC = re.compile(r"function\b")
_HEADER = re.compile(r"function\s*(?:\[([^\]\n]*)\]|([A-Za-z]\w*))\s*=", re.ASCII)
_ASSIGN = re.compile(r"([A-Za-z]\w*(?:\.[A-Za-z]\w*)*)[^\S\n]*(=(?!=)|\()[^\S\n]*", re.ASCII)
_TRAILER = re.compile(r"[^\S\n]*(?:[;,]|\n|\Z)")
_BARE_NUMBER = re.compile(r"[+-]?\.?[0-9]")
_IDENT = re.compile(r"[A-Za-z]\w*", re.ASCII)
# A cell array body of plain strings (no doubled quotes, comments or nesting) between
# separators: read with one regex (a cell of 13,659 bus names is common).
_SIMPLE_CELL = re.compile(r"""[\s;,]*(?:(?:'[^'\n]*'|"[^"\n]*")(?!['"])[\s;,]*)*""")
_CELL_ITEM = re.compile(r"'([^'\n]*)'|\"([^\"\n]*)\"")
# Calls that can change variables without assigning them (``eval('mpc.bus(1,3) = 0')``,
# ``load``, ``run`` a script, ...): the parser runs no code, so a case that makes them
# is refused rather than read without their effect.
_DYNAMIC_WORDS = frozenset(
    ("eval", "evalc", "evalin", "assignin", "feval", "run", "load", "importdata", "setfield")
) | frozenset(("rmfield", "builtin", "loadcase", "ext2int", "int2ext", "scale_load", "error"))
_DYNAMIC_HINT = re.compile(
    r"eval|assignin|run|load|importdata|setfield|rmfield|builtin|ext2int|error|@"
)
#: Statements whose effect depends on running code: control flow decides which
#: assignments happen (``if false, mpc.baseMVA = 50; end``), ``clear`` removes them.
_CONTROL = frozenset(
    ("if", "elseif", "else", "while", "for", "parfor", "switch", "case", "otherwise")
) | frozenset(("try", "catch", "break", "continue", "global", "persistent", "clear", "clearvars"))
_TRAILING_RETURN = re.compile(r"return\b[\s;,]*(?:end\b[\s;,]*)*(?:function\b|\Z)")
_WORD_AT = re.compile(r"\w*", re.ASCII)
_CALL_AFTER = re.compile(r"[ \t]*\(|[ \t]+[\w'\"./]", re.ASCII)
_QUOTE = re.compile(r"['\"]")
_OPENER = {")": "(", "]": "[", "}": "{"}
_CLOSER = {v: k for k, v in _OPENER.items()}


_PLAIN = str.maketrans("dD;,", "ee\n ")
#: Bodies up to this many characters are read token by token (:func:`_matrix_small`).
_SMALL_BODY = 256
# Byte classes of a body of plain numbers (0: anything else); Inf and NaN are the only words.
_NL, _BLANK, _DIGIT, _DOT, _EXP, _SIGN, _WORD = 1, 2, 3, 4, 5, 6, 7
_CLASS = np.zeros(256, np.uint8)
_CLASS[[ord(c) for c in " \t\r\v\f"]] = _BLANK
_CLASS[ord("\n")] = _NL
_CLASS[[ord(c) for c in "0123456789"]] = _DIGIT
_CLASS[ord(".")] = _DOT
_CLASS[[ord("e"), ord("E")]] = _EXP
_CLASS[[ord("+"), ord("-")]] = _SIGN
_CLASS[[ord(c) for c in "IinfaN"]] = _WORD
_CLASS_TABLE = _CLASS.tobytes()
_WORDS = frozenset((b"Inf", b"inf", b"NaN", b"nan"))
_POW10 = 10.0 ** np.arange(23)  # every power of ten that is an exact double
#: A mantissa of at most 15 digits is below 2**53, so ``m * 10**k`` or ``m / 10**k`` with
#: |k| <= 22 is one correctly rounded operation on exact doubles: float()'s result.
_FAST_DIGITS = 15


def _extended_powers() -> np.ndarray | None:
    """The powers of ten that are exact in ``np.longdouble`` when it has a 64-bit (or
    longer) mantissa (x87 extended, IEEE quad), else None (where it is a double)."""
    if np.finfo(np.longdouble).nmant < 63:
        return None
    powers = [np.longdouble(1)]
    while len(powers) < 28:  # 10**27 = 2**27 * 5**27 and 5**27 < 2**64: exact
        powers.append(powers[-1] * np.longdouble(10))
    return np.array(powers, np.longdouble)


#: Tokens of 16 to 19 significant digits (``repr`` output: 17) with a decimal exponent
#: within +-27: the mantissa (below 10**19 < 2**64) and 10**k are exact in a 64-bit-
#: mantissa ``longdouble``, so ``m * 10**k`` is one rounding to 64 bits, then one to
#: 53. That double rounding gives float()'s result unless the first lands exactly
#: halfway between two doubles; those tokens go to float(). None: no such type here.
_POW10_EXT = _extended_powers()
_EXT_DIGITS = 19
_UINT_POW10 = 10 ** np.arange(_EXT_DIGITS + 1, dtype=np.uint64)
_FAST_EXP_DIGITS = 4
_CHUNK_CHARS = 1 << 17
_CUT = re.compile(r"[\s;,]")  # where a chunk may end: between two tokens


def _chunk_numbers(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """The numbers of ``data`` (whole tokens of a body of plain numbers, translated by
    ``_PLAIN``) and the count of numbers between consecutive line breaks (one more count
    than breaks); None when a token is not a number by ``float``'s grammar (or is a word
    other than Inf/NaN).

    Vectorised: the grammar is checked with byte classes, and a token of at most
    ``_FAST_DIGITS`` digits and a decimal exponent within +-22 is converted exactly
    as float() would (Clinger's fast path). Longer tokens and the words go to float()."""
    arr = np.frombuffer(data, np.uint8)
    n = arr.size
    cls = np.frombuffer(data.translate(_CLASS_TABLE), np.uint8)
    if not cls.all():
        return None
    blank = cls <= _BLANK
    first = ~blank
    last = first.copy()
    first[1:] &= blank[:-1]
    last[:-1] &= blank[1:]
    starts = np.flatnonzero(first)
    ends = np.flatnonzero(last) + 1
    del last
    t_count = starts.size
    tid = np.cumsum(first, dtype=np.int32)  # token of each byte (1-based here)
    del first
    # numbers on each stretch between line breaks (the first and last may be partial lines)
    per_line = np.diff(tid[np.flatnonzero(cls == _NL)], prepend=0, append=t_count)
    if t_count == 0:
        return np.empty(0), per_line
    tid -= 1
    slow = np.zeros(t_count, bool)  # tokens float() converts
    signs = np.flatnonzero(cls == _SIGN)  # first in the token, or right after its 'e'
    if signs.size:
        before = np.maximum(signs - 1, 0)
        ok = (blank[before] | (cls[before] == _EXP)) & (signs > 0)
        ok[signs == 0] = True
        if not ok.all():
            return None
    del blank
    words = np.flatnonzero(cls == _WORD)
    if words.size:
        wt = np.unique(tid[words])
        if any(data[starts[t] : ends[t]].lstrip(b"+-") not in _WORDS for t in wt.tolist()):
            return None
        slow[wt] = True
    dots = np.flatnonzero(cls == _DOT)
    dot_tok = tid[dots]
    exps = np.flatnonzero(cls == _EXP)
    exp_tok = tid[exps]
    if np.any(dot_tok[1:] == dot_tok[:-1]) or np.any(exp_tok[1:] == exp_tok[:-1]):
        return None  # two dots or two exponents in one token
    mant = cls == _DIGIT
    if exps.size:
        dot_of = np.full(t_count, -1, np.int64)
        dot_of[dot_tok] = dots
        if np.any(dot_of[exp_tok] > exps):
            return None  # a dot in the exponent
        signed = cls[np.minimum(exps + 1, n - 1)] == _SIGN
        digits0 = exps + 1 + signed
        n_exp = ends[exp_tok] - digits0
        if np.any(n_exp < 1):
            return None  # an exponent without digits
        expo = np.zeros(exps.size, np.int64)
        for j in range(min(int(n_exp.max()), _FAST_EXP_DIGITS)):
            at = np.minimum(digits0 + j, n - 1)
            inside = j < n_exp
            expo = np.where(inside, expo * 10 + (arr[at] - 48), expo)
            mant[at[inside]] = False
        long_exp = n_exp > _FAST_EXP_DIGITS
        if long_exp.any():  # clear the rest of those exponents' digits
            slow[exp_tok[long_exp]] = True
            for a, b in zip(digits0[long_exp], ends[exp_tok[long_exp]], strict=True):
                mant[a:b] = False
        expo[signed & (arr[np.minimum(exps + 1, n - 1)] == ord("-"))] *= -1
    cm = np.cumsum(mant, dtype=np.int32)  # mantissa digits up to each byte
    cm_end = cm[ends - 1]
    n_digits = cm_end - (cm[starts] - mant[starts])
    if np.any((n_digits == 0) & ~slow):
        return None  # a sign, dot or exponent without mantissa digits
    long = n_digits > _FAST_DIGITS
    digits = arr[mant]  # every mantissa digit, token after token
    place = np.repeat(cm_end, n_digits)  # each digit's power of ten: the digits after it
    place -= np.arange(1, digits.size + 1, dtype=np.int32)
    np.minimum(place, _POW10.size - 1, out=place)
    digits -= 48
    weight = _POW10[place]
    weight *= digits
    mantissa = np.zeros(t_count)
    has = np.flatnonzero(n_digits)
    first = (np.cumsum(n_digits) - n_digits)[has]
    if has.size:  # sums of integers below 2**53: exact (approximate for longer tokens)
        mantissa[has] = np.add.reduceat(weight, first)
    del weight
    scale = np.zeros(t_count, np.int64)  # the decimal exponent of the mantissa's last digit
    scale[dot_tok] = cm[dots] - cm_end[dot_tok]  # minus the digits after the dot
    if exps.size:
        scale[exp_tok] += expo
    del cm, mant
    values = mantissa / _POW10[np.minimum(np.maximum(-scale, 0), _POW10.size - 1)]
    up = np.flatnonzero(scale > 0)
    values[up] = mantissa[up] * _POW10[np.minimum(scale[up], _POW10.size - 1)]
    slow |= np.abs(scale) >= _POW10.size
    if _POW10_EXT is not None and long.any():
        ext = long & ~slow & (mantissa < 9e18) & (np.abs(scale) < _POW10_EXT.size)
        _extended(values, ext, digits, place, n_digits, first, has, scale, slow)
        long &= ~ext
    slow |= long
    del digits, place
    negative = arr[starts] == ord("-")
    values[negative] *= -1.0
    slow_at = np.flatnonzero(slow)
    if slow_at.size:  # float() in one C-level pass over the split tokens
        tokens = data.split()
        try:
            values[slow_at] = np.fromiter(
                map(float, map(tokens.__getitem__, slow_at.tolist())), float, slow_at.size
            )
        except ValueError:
            return None
    return values, per_line


def _extended(values, ext, digits, place, n_digits, first, has, scale, slow) -> None:
    """Set ``values`` of the tokens ``ext`` (16 to 19 significant digits, |scale| within
    the exact powers of ``_POW10_EXT``) in extended precision, and mark ``slow`` those
    whose double rounding could differ from float() (see ``_POW10_EXT``)."""
    weight = _UINT_POW10[np.minimum(place, _EXT_DIGITS)]  # exact below 10**19
    weight *= digits
    whole = np.zeros(values.size, np.uint64)
    whole[has] = np.add.reduceat(weight, first)
    at = np.flatnonzero(ext)
    m = whole[at].astype(np.longdouble)  # exact: below 2**64
    k = scale[at]
    r = np.where(k >= 0, m * _POW10_EXT[np.maximum(k, 0)], m / _POW10_EXT[np.maximum(-k, 0)])
    d = r.astype(np.float64)
    # r exactly halfway between d and its neighbour on r's side: ambiguous
    toward = np.nextafter(d, np.where(r > d, np.inf, -np.inf))
    half = (toward.astype(np.longdouble) - d) / 2
    tie = (r != d) & (r - d == half)
    values[at] = d
    slow[at[tie]] = True


def _matrix_fast(src: str, start: int, end: int) -> np.ndarray | None:
    """The matrix of ``src[start:end]`` when it is a body of plain numbers (rows split by
    ``;`` or newlines, items by blanks or commas), read in chunks of about
    ``_CHUNK_CHARS`` cut between tokens (:func:`_chunk_numbers`), so time is linear and
    memory a few times the body. None when the body holds anything else, its rows differ
    in length, a token is not a number by ``float``'s grammar or is longer than a chunk:
    the token-by-token path then reads it and names the problem."""
    if end - start <= _SMALL_BODY:
        return _matrix_small(src[start:end])
    # carry: numbers so far on the line a chunk ended in; rows are checked chunk by chunk
    # (a per-line count array for the whole body cost 8 bytes a line: 18x a file of
    # newlines)
    values, ncols, nrows, carry = [], -1, 0, 0
    pos = start
    while pos < end:
        stop = end
        if end - pos > _CHUNK_CHARS:
            cut = _CUT.search(src, pos + _CHUNK_CHARS, min(pos + 2 * _CHUNK_CHARS, end))
            if cut is None:
                return None
            stop = cut.end()
        try:
            data = src[pos:stop].translate(_PLAIN).encode("ascii")
        except UnicodeEncodeError:
            return None
        if (got := _chunk_numbers(data)) is None:
            return None
        values.append(got[0])
        per_line = got[1]
        per_line[0] += carry
        done = per_line[:-1]
        done = done[done > 0]
        if done.size:
            ncols = int(done[0]) if ncols < 0 else ncols
            if np.any(done != ncols):
                return None
            nrows += done.size
        carry = int(per_line[-1])
        del got, per_line, done
        pos = stop
    if carry:
        if ncols >= 0 and carry != ncols:
            return None
        ncols, nrows = carry, nrows + 1
    if nrows == 0:
        return None
    flat = values[0] if len(values) == 1 else np.concatenate(values)
    return flat.reshape(nrows, ncols)


def _matrix_small(body: str) -> np.ndarray | None:
    """:func:`_matrix_fast` for a short body, token by token in Python: numpy's setup per
    chunk cost ~240 us, so a file of a million one-number matrices took minutes."""
    rows = [line.split() for line in body.translate(_PLAIN).split("\n")]
    rows = [r for r in rows if r]
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        return None
    if not all(_NUM.fullmatch(t) for r in rows for t in r):
        return None
    return np.array([[float(t) for t in r] for r in rows], dtype=np.float64)


def _is_transpose(s: str, i: int) -> bool:
    """MATLAB's rule: ``'`` right after a name, number, closer or quote is a transpose."""
    if i == 0:
        return False
    prev = s[i - 1]
    return (prev.isascii() and prev.isalnum()) or prev in "_)]}.'"


def _string_end(s: str, i: int) -> int:
    """Index of the quote closing the string literal opening at ``s[i]``; -1 if none."""
    quote, j = s[i], i + 1
    while True:
        k = s.find(quote, j)
        # a newline before the closing quote leaves the string open; searching only up to
        # k keeps this linear (a search to the end of a long line, per string, was not)
        if k < 0 or s.find("\n", j, k) >= 0:
            return -1
        if not s.startswith(quote, k + 1):
            return k
        j = k + 2  # a doubled quote stands for one quote character


def _skip_quote(s: str, i: int) -> int:
    """Offset just past the transpose or string literal at ``s[i]``; -1 if left open."""
    if s[i] == "'" and _is_transpose(s, i):
        return i + 1
    end = _string_end(s, i)
    return -1 if end < 0 else end + 1


def _dynamic_call(src: str) -> re.Match | None:
    """The first call of a :data:`_DYNAMIC_WORDS` function outside strings (a word of
    the set, not a field, followed by ``(`` or a command-syntax argument); linear: the
    strings before each hit are walked once, from where the last walk stopped."""
    cursor = 0  # src[:cursor] is walked: cursor is outside any string
    word_end = 0  # the end of the last word looked at: hits before it are inside it
    for hit in _DYNAMIC_HINT.finditer(src):
        i = hit.start()
        if i < word_end:
            continue  # "loadload...": one word, walked once (each hit walked back: quadratic)
        start, word = i, hit  # "@": a function handle (cellfun(@eval, ...), f = @evalc)
        if hit.group() != "@":
            while start > 0 and (src[start - 1].isascii() and src[start - 1].isalnum()):
                start -= 1  # the whole word holding the hit
            word = _WORD_AT.match(src, start)
            word_end = word.end()
            if start > 0 and src[start - 1] in "_.":
                continue  # x_load, mpc.load: a name or a field
            if word.group() not in _DYNAMIC_WORDS or _CALL_AFTER.match(src, word.end()) is None:
                continue
        while cursor <= start and (q := _QUOTE.search(src, cursor, start)) is not None:
            end = _skip_quote(src, q.start())
            cursor = q.start() + 1 if end < 0 else end
        if start < cursor:
            continue  # inside a string ('load bus 3')
        return word
    return None


def _strip_line(line: str, lineno: int, path: str | None) -> tuple[str, bool]:
    """Drop the comment of one physical line; also say whether it ends in ``...``."""
    if "'" not in line and '"' not in line:
        cut, dots = line.find("%"), line.find("...")
        if dots >= 0 and (cut < 0 or dots < cut):
            return line[:dots], True
        return (line if cut < 0 else line[:cut]), False
    i = 0
    while (m := _LINE_SPECIAL.search(line, i)) is not None:
        if line[m.start()] in "%.":
            return line[: m.start()], line[m.start()] == "."
        if (i := _skip_quote(line, m.start())) < 0:
            raise MatpowerParseError("string is never closed", line=lineno, path=path)
    return line, False


# What makes a line need more than a copy with its line comment cut (one regex over
# stretches of whole lines): a "..." continuation, "%{" (block comment markers stand
# alone on their line), or a quote before a '%' on the same line (the '%' may sit in a
# string).
_LINE_MARKS = ("'", '"', "...", "%{", "%")
_LINE_COMMENT = re.compile(r"%[^\n]*")


def _next_mark(text: str, pos: int, ahead: dict[str, int], marks) -> int:
    """Offset of the first of ``marks`` at or after ``pos`` (-1 if none). Each mark's
    next offset is kept in ``ahead`` and searched again (a C scan) only once ``pos``
    passes it, so the scans over a whole file stay linear in its size."""
    found = -1
    for mark in marks:
        at = ahead[mark]
        if at != -1 and at < pos:
            ahead[mark] = at = text.find(mark, pos)
        if at >= 0 and (found < 0 or at < found):
            found = at
    return found


def _next_line_to_read(text: str, pos: int, ahead: dict[str, int]) -> int:
    """An offset in the first line at or after ``pos`` (a line start) that must be read
    character by character (-1 if none): one with "...", "%{", or a quote followed by
    a '%'. Only the lines holding a '%' after some quote are looked at, a few C scans
    each: lines of names without comments, and comments without quotes, are skipped
    in bulk."""
    while True:
        must = _next_mark(text, pos, ahead, ("...", "%{"))
        quote = _next_mark(text, pos, ahead, ("'", '"'))
        if quote < 0 or (must >= 0 and must < quote):
            return must
        percent = _next_mark(text, quote, ahead, ("%",))
        if percent < 0:
            return must
        start = max(text.rfind("\n", 0, percent) + 1, pos)
        end = text.find("\n", percent)
        end = len(text) if end < 0 else end
        first = _next_mark(text, start, ahead, ("'", '"'))
        if 0 <= first < percent:  # a quote before the '%' on its line
            return first if must < 0 else min(first, must)
        if must >= 0 and must <= end:
            return must
        if end >= len(text):
            return -1
        pos = end + 1


class _Parser:
    """Parses comment-free source (``src``), mapping offsets back to line numbers."""

    def __init__(self, text: str, path: str | None) -> None:
        self.path = path
        text = text.removeprefix("\ufeff")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        # Only lines with "...", "%{" or a quote before a '%' are read one by one; the lines between
        # them are copied as one slice with their line comments cut by one regex. Work
        # and memory are linear in the text, with no per-line structures (so a file of
        # newlines costs what its text costs). ``self.joins``: the offsets in ``src`` of
        # the line breaks that "..." turned into spaces (for line numbers).
        parts: list[str] = []
        self.joins: list[int] = []
        copied = 0  # text[:copied] is in parts
        counted, counted_at = 0, 0  # newlines in text[:counted_at]
        size = 0  # characters in parts
        pos, n = 0, len(text)
        ahead = dict.fromkeys(_LINE_MARKS, -2)  # next offset of each mark (-2: not yet looked)
        while (at := _next_line_to_read(text, pos, ahead)) >= 0:
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at)
            end = n if end < 0 else end
            parts.append(_LINE_COMMENT.sub("", text[copied:start]))
            size += len(parts[-1])
            line = text[start:end]
            if line.strip() == "%{":  # block comments nest; the markers must stand alone
                end = self._block_end(text, end)
                code, cont = "\n" * text.count("\n", start, end), False
            else:
                if "'" in line or '"' in line:  # line numbers for its errors, counted once
                    counted += text.count("\n", counted_at, start)
                    counted_at = start
                code, cont = _strip_line(line, counted + 1, path)
            parts.append(code)
            size += len(code)
            if end < n:
                if cont:
                    self.joins.append(size)
                parts.append(" " if cont else "\n")
                size += 1
                end += 1
            copied = pos = end
        parts.append(_LINE_COMMENT.sub("", text[copied:]))
        self.src = "".join(parts)

    @staticmethod
    def _block_end(text: str, end: int) -> int:
        """Offset of the newline ending the line that closes the block comment opened on
        the line ending at ``end`` (or the end of the text)."""
        depth, n = 1, len(text)
        while depth and end < n:
            start = end + 1
            end = text.find("\n", start)
            end = n if end < 0 else end
            stripped = text[start:end].strip()
            if stripped == "%{":
                depth += 1
            elif stripped == "%}":
                depth -= 1
        return end

    def line_of(self, offset: int) -> int:
        """The line number (1-based) of ``src[offset]`` in the original text."""
        return self.src.count("\n", 0, offset) + bisect.bisect_right(self.joins, offset - 1) + 1

    def error(self, message: str, offset: int | None) -> MatpowerParseError:
        """Build an error for the line holding ``src[offset]``."""
        line = None if offset is None else self.line_of(offset)
        return MatpowerParseError(message, line=line, path=self.path)

    def match_close(self, start: int, label: str) -> tuple[int, int | None]:
        """Find the bracket closing ``src[start]``; also the first nested/quoted item."""
        src, stack, pos = self.src, [start], start + 1
        nested: int | None = None
        # the common case, a plain matrix: the first closer, with no other bracket or
        # quote before it (each test a C scan; the loop below is the general case)
        close = src.find(_CLOSER[src[start]], pos)
        if close >= 0 and all(src.find(c, pos, close) < 0 for c in "[](){}'\""):
            return close, None
        if close >= 0 and src[start] == "{" and _SIMPLE_CELL.fullmatch(src, pos, close):
            quote = _CELL_ITEM.search(src, pos, close)  # a '}' in a string fails the match
            return close, None if quote is None else quote.start()
        while (m := _SPECIAL.search(src, pos)) is not None:
            i, ch = m.start(), m.group()
            pos = i + 1
            if ch in "([{":
                stack.append(i)
            elif ch in ")]}":
                top = stack.pop()
                if src[top] != _OPENER[ch]:
                    line = self.line_of(top)
                    raise self.error(
                        f"{label}: '{ch}' does not match '{src[top]}' of line {line}", i
                    )
                if not stack:
                    return i, nested
            elif (pos := _skip_quote(src, i)) < 0:
                raise self.error(f"{label}: string is never closed", i)
            nested = i if nested is None else nested
        raise self.error(f"{label}: '{src[start]}' is never closed", start)

    def statement_end(self, pos: int) -> int:
        """Offset of the ``;``, ``,`` or newline that ends the statement at ``pos``."""
        src = self.src
        while (m := _STMT_SPECIAL.search(src, pos)) is not None:
            i, ch = m.start(), m.group()
            if ch in ";,\n":
                return i
            if ch in "([{":
                pos = self.match_close(i, "statement")[0] + 1
            elif ch in ")]}":
                raise self.error(f"unmatched '{ch}'", i)
            elif (pos := _skip_quote(src, i)) < 0:
                raise self.error("string is never closed", i)
        return len(src)

    def matrix(self, start: int, close: int, label: str) -> np.ndarray:
        """Convert the literal numeric matrix ``src[start:close+1]`` in bulk."""
        base = start + 1
        if (
            self.src.find(",", base, close) >= 0
            and (m := _EMPTY_ITEM.search(self.src[base:close])) is not None
        ):
            raise self.error(f"{label} has an empty value before ','", base + m.end() - 1)
        fast = _matrix_fast(self.src, base, close)
        if fast is not None:
            return fast
        body = self.src[base:close].replace(",", " ")
        ncols, flat, nrows = -1, [], 0
        for m in _ROW.finditer(body):
            tokens = m.group().split()
            if not tokens:
                continue
            if ncols < 0:
                ncols = len(tokens)
            elif len(tokens) != ncols:
                self.check_tokens(body[: m.end()], base, label)
                first = base + m.start() + len(m.group()) - len(m.group().lstrip())
                raise self.error(
                    f"{label} row {nrows + 1} has {len(tokens)} values, "
                    f"expected {ncols} like the rows before it",
                    first,
                )
            flat.extend(tokens)
            nrows += 1
        if nrows == 0:
            return np.zeros((0, 0))
        unique = set(flat)
        if any(_NUM.fullmatch(t) is None for t in unique):
            self.check_tokens(body, base, label)
        cache = {t: float(t.translate(_D_TO_E)) for t in unique}
        values = np.fromiter(map(cache.__getitem__, flat), dtype=np.float64, count=len(flat))
        return values.reshape(nrows, ncols)

    def check_tokens(self, body: str, base: int, label: str) -> None:
        """Raise for the first token of ``body`` that is not a number."""
        for m in _TOKEN.finditer(body):
            if _NUM.fullmatch(m.group()) is None:
                shown = m.group() if len(m.group()) <= 40 else m.group()[:40] + "..."
                raise self.error(f"{label}: cannot read {shown!r} as a number", base + m.start())

    def cell_strings(self, start: int, close: int, label: str) -> list[str]:
        """The quoted strings of the cell array ``src[start:close+1]``."""
        if _SIMPLE_CELL.fullmatch(self.src, start + 1, close):
            return [a or b for a, b in _CELL_ITEM.findall(self.src, start + 1, close)]
        body, pos, names = self.src[start + 1 : close], 0, []
        while (pos := _SEP.match(body, pos).end()) < len(body):
            end = _string_end(body, pos) if body[pos] in "'\"" else -1
            if end < 0:
                raise self.error(f"{label} must hold quoted strings only", start + 1 + pos)
            quote = body[pos]
            names.append(body[pos + 1 : end].replace(quote * 2, quote))
            pos = end + 1
        return names

    def value(self, field: str, label: str, pos: int) -> tuple[Any, int]:
        """Read the right-hand side at ``pos``: (value or None to skip, next offset)."""
        src, known = self.src, field in _KNOWN
        ch = src[pos] if pos < len(src) else "\n"
        if ch in "[{":
            close, nested = self.match_close(pos, label)
            tail = _TRAILER.match(src, close + 1)
            if known:
                want = {"bus_name": "{", "version": ""}.get(field, "[")
                if ch != want or (ch == "[" and nested is not None) or tail is None:
                    if ch != want:
                        kind = {"[": "a numeric matrix", "{": "a cell array of strings"}.get(want)
                        raise self.error(f"{label} must be {kind or 'a quoted string'}", pos)
                    if tail is None:
                        raise self.error(f"{label}: unexpected text after '{src[close]}'", close)
                    msg = f"{label} must hold literal numbers only (no nesting, strings or calls)"
                    raise self.error(msg, nested)
            if tail is None:
                return None, self.statement_end(close + 1)
            if ch == "{":
                return (self.cell_strings(pos, close, label) if known else None), close + 1
            try:
                return self.matrix(pos, close, label), close + 1
            except MatpowerParseError:
                if known:
                    raise
                return None, close + 1  # an unknown matrix of non-numbers is skipped
        if ch in "'\"":
            end = _string_end(src, pos)
            if end < 0:
                raise self.error(f"{label}: string is never closed", pos)
            if _TRAILER.match(src, end + 1) is None or (known and field != "version"):
                if known:
                    raise self.error(f"{label} has an unexpected string value", pos)
                return None, self.statement_end(end + 1)
            text = src[pos + 1 : end].replace(ch * 2, ch)
            return (text if field == "version" else None), end + 1
        end = self.statement_end(pos)
        text = src[pos:end].strip()
        if _NUM.fullmatch(text) is not None:
            number = float(text.translate(_D_TO_E))
            if field in _TABLES:
                return np.array([[number]]), end
            if field == "version":
                return (str(int(number)) if number.is_integer() else repr(number)), end
            if field != "bus_name":
                return number, end
        if known:
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise self.error(f"{label}: cannot read {shown!r} as a value", pos)
        return None, end

    def parse(self) -> dict[str, Any]:
        """Walk the statements and assemble the case dict."""
        src, pos, n = self.src, 0, len(self.src)
        if (call := _dynamic_call(src)) is not None:
            what = "a function handle (@...)" if call.group() == "@" else f"{call.group()}(...)"
            raise self.error(
                f"the case uses {what}, which could change the case; "
                "gridphysics runs no MATLAB code, so it cannot read this case faithfully",
                call.start(),
            )
        outputs: set[str] | None = None  # None: no function header (a script)
        found: dict[str, tuple[Any, int, str]] = {}
        bare = False
        count = 0
        while (pos := _SEP.match(src, pos).end()) < n:
            count += 1
            if count > MAX_STATEMENTS:
                raise self.error(
                    f"more than {MAX_STATEMENTS:,} statements; a case holds a few dozen "
                    "(gridphysics.matpower.MAX_STATEMENTS)",
                    pos,
                )
            if _FUNC.match(src, pos):
                if outputs is not None:
                    break  # a subfunction: not part of the case
                header = _HEADER.match(src, pos)
                names = (header.group(1) or header.group(2) or "") if header else ""
                outputs = set(_IDENT.findall(names))
                end = src.find("\n", pos)
                pos = n if end < 0 else end
                continue
            m = _ASSIGN.match(src, pos)
            word = _IDENT.match(src, pos)
            self.check_statement(word.group() if word else "", pos, outputs, m is None)
            if m is None:
                if _BARE_NUMBER.match(src, pos):
                    raise self.error(
                        "a row of numbers outside any matrix (a data row after its '];'?)", pos
                    )
                pos = self.statement_end(pos)
                continue
            label, parts = m.group(1), m.group(1).split(".")
            field = None
            if len(parts) == 1 and (outputs is None or parts[0] in outputs):
                field = parts[0]
            elif len(parts) == 2 and parts[0] in (outputs if outputs is not None else {"mpc"}):
                field = parts[1]
            whole = parts[0] in outputs if outputs is not None else parts[0] == "mpc"
            if len(parts) == 1 and whole and field not in _KNOWN:
                raise self.error(
                    f"assignment to the whole case ({label} = ...) is not supported: its "
                    f"value cannot be read without running MATLAB code; set its fields "
                    f"({label}.bus = [...]) instead",
                    pos,
                )
            if m.group(2) == "(":
                if field in _KNOWN:
                    msg = f"indexed assignment to {label} is not supported (no MATLAB code is run)"
                    raise self.error(msg, pos)
                pos = self.statement_end(pos)
                continue
            if field is None:
                pos = self.statement_end(m.end())
                continue
            value, pos = self.value(field, label, m.end())
            if value is not None:
                found[field] = (value, m.start(), label)
                bare = bare or (len(parts) == 1 and field in _REQUIRED)
        return self.assemble(found, bare)

    def check_statement(self, word: str, pos: int, outputs, unread: bool) -> None:
        """Refuse a statement whose effect on the case needs MATLAB to run: control flow,
        ``clear``, statements after ``return``, multiple assignment (``[a] = deal(1)``)
        and, when it is no plain assignment (``unread``), any statement on the case
        struct (``mpc.('baseMVA') = 50``, ``mpc.bus{1} = 3``, ``mpc += 1``)."""
        src = self.src
        if word in _CONTROL:
            raise self.error(
                f"'{word}' is not supported: gridphysics runs no MATLAB code, so it cannot "
                "tell which assignments would happen",
                pos,
            )
        if word == "return" and not _TRAILING_RETURN.match(src, pos):
            raise self.error("statements after 'return' are not supported (MATLAB skips them)", pos)
        if not unread:
            return
        if src.startswith("[", pos):
            raise self.error("multiple assignment ([a, b] = ...) is not supported", pos)
        struct = word in outputs if outputs is not None else word in ("mpc", *_KNOWN)
        if struct:  # the case struct, or a field as a bare name (bus += 1, bus{1} = 3)
            raise self.error(
                f"this statement on {word} is not a plain assignment ({word} = value, {word}.field = value); "
                "gridphysics runs no MATLAB code, so it cannot read it",
                pos,
            )

    def assemble(self, found: dict[str, tuple[Any, int, str]], bare: bool) -> dict[str, Any]:
        """Check the tables against MATPOWER's rules and build the result."""
        missing = [f"mpc.{k}" for k in _REQUIRED if k not in found]
        if missing:
            raise self.error(f"required table missing: {', '.join(missing)}", None)
        case: dict[str, Any] = {}
        base, at, label = found["baseMVA"]
        if isinstance(base, np.ndarray):
            base = float(base[0, 0]) if base.shape == (1, 1) else math.nan
        if not (math.isfinite(base) and base > 0):
            raise self.error(f"{label} must be one positive finite number", at)
        for name in _TABLES:
            if name not in found:
                continue
            table, at, label = found[name]
            need = _MIN_COLS.get(name, 0)
            if table.size == 0 and name in ("gen", "branch", "gencost", "areas"):
                table = np.zeros((0, need or (4 if name == "gencost" else 0)))
            elif table.shape[1] < need:
                raise self.error(
                    f"{label} has {table.shape[1]} columns, MATPOWER needs at least {need}", at
                )
            case[name] = table
        gen_cols = case["gen"].shape[1]
        version = found.get("version", ("1" if bare or gen_cols < 21 else "2",))[0]
        if "gencost" in case:
            self.check_gencost(case["gencost"], case["gen"].shape[0], *found["gencost"][1:])
        if "bus_name" in found:
            names, at, label = found["bus_name"]
            if len(names) != case["bus"].shape[0]:
                msg = f"{label} has {len(names)} names for {case['bus'].shape[0]} buses"
                raise self.error(msg, at)
            case["bus_name"] = names
        head = {"version": version, "baseMVA": base}
        extra = {k: v[0] for k, v in found.items() if k not in _KNOWN}
        return head | case | extra

    def check_gencost(self, gc: np.ndarray, n_gen: int, at: int, label: str) -> None:
        """MATPOWER's gencost rules: row count and enough columns for NCOST."""
        if gc.shape[0] not in (n_gen, 2 * n_gen):
            msg = f"{label} has {gc.shape[0]} rows, expected {n_gen} or {2 * n_gen} (one or two per generator)"
            raise self.error(msg, at)
        if gc.shape[0] and gc.shape[1] < 4:
            raise self.error(f"{label} has {gc.shape[1]} columns, MATPOWER needs at least 4", at)
        model, ncost = gc[:, 0], gc[:, 3]
        costed = (model == 1) | (model == 2)
        bad = costed & ~(np.isfinite(ncost) & (ncost >= 0) & (ncost == np.floor(ncost)))
        if bad.any():
            row = int(np.argmax(bad))
            raise self.error(f"{label} row {row + 1}: NCOST must be a whole number", at)
        with np.errstate(all="ignore"):
            need = 4 + np.where(model == 1, 2.0, 1.0) * np.where(costed, ncost, 0.0)
        short = costed & (need > gc.shape[1])
        if short.any():
            row = int(np.argmax(short))
            raise self.error(
                f"{label} row {row + 1} (MODEL {model[row]:g}, NCOST {ncost[row]:g}) needs "
                f"{need[row]:g} columns, the matrix has {gc.shape[1]}",
                at,
            )


def parse_matpower(text: str, *, path: str | None = None) -> dict[str, Any]:
    """Parse the text of a MATPOWER case file into a PYPOWER-style case dict.

    Returns ``version`` (str), ``baseMVA`` (float), ``bus``, ``gen``, ``branch`` and,
    when present, ``gencost``, ``areas`` (2-D float64 arrays with every column of the
    file) and ``bus_name`` (list of str). Other numeric fields of the case struct
    (``mpc.dcline``, ...) are kept under their names; anything else is skipped.

    Raises:
        MatpowerParseError: on any malformed input, with the line number where known.
    """
    if not isinstance(text, str):
        raise InputTypeError(f"parse_matpower expects str, got {type(text).__name__}")
    if len(text) > MAX_CASE_CHARS:
        raise MatpowerParseError(
            f"the case text has {len(text):,} characters, above the limit of "
            f"{MAX_CASE_CHARS:,} (gridphysics.matpower.MAX_CASE_CHARS)",
            path=path,
        )
    parser = _Parser(text, path)
    return parser.parse()


def load_matpower_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a MATPOWER ``.m`` file (UTF-8, bad bytes replaced) and parse it.

    Raises:
        InputTypeError: ``path`` is not a path.
        CaseFileError: the file does not exist, is a directory or cannot be read.
        MatpowerParseError: the file is malformed, or larger than MAX_CASE_CHARS.
    """
    if not isinstance(path, str | os.PathLike):
        raise InputTypeError(f"a case file path must be a str or a path, got {path!r}")
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise CaseFileError(f"cannot read the case file {os.fspath(path)!r}: {exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CaseFileError(f"cannot read the case file {os.fspath(path)!r}: it is a directory")
    if not stat.S_ISREG(info.st_mode):
        # a device or a FIFO has no size to check and may never end (or never open)
        raise CaseFileError(
            f"cannot read the case file {os.fspath(path)!r}: not a regular file "
            "(a device, FIFO or socket)"
        )
    size = info.st_size
    if size > MAX_CASE_CHARS:
        raise MatpowerParseError(
            f"the file has {size:,} bytes, above the limit of {MAX_CASE_CHARS:,} "
            "(gridphysics.matpower.MAX_CASE_CHARS)",
            path=os.fspath(path),
        )
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            # bounded even if the file grew since; read(n) sets aside n characters, so
            # n is the file's size (a file has at least as many bytes as characters),
            # not the limit (200 MB set aside for every file was 89x pegase13659)
            text = f.read(min(size, MAX_CASE_CHARS) + 1)
    except OSError as exc:
        raise CaseFileError(f"cannot read the case file {os.fspath(path)!r}: {exc}") from None
    if len(text) > size:  # more characters than it had bytes: it grew while being read
        raise CaseFileError(
            f"cannot read the case file {os.fspath(path)!r}: it changed while being read"
        )
    return parse_matpower(text, path=os.fspath(path))


# section title and column names (solved-case columns included; cut to the table's width)
_SECTIONS = {
    "bus": ("bus data", "bus_i type Pd Qd Gs Bs area Vm Va baseKV zone Vmax Vmin lam_P lam_Q"),
    "gen": ("generator data", "bus Pg Qg Qmax Qmin Vg mBase status Pmax Pmin Pc1 Pc2"),
    "branch": ("branch data", "fbus tbus r x b rateA rateB rateC ratio angle status angmin"),
    "gencost": ("generator cost data", "2 startup shutdown n c(n-1) ... c0"),
    "areas": ("area data", "area refbus"),
}
_MORE_HEADS = {
    "bus": " mu_Vmax mu_Vmin",
    "gen": " Qc1min Qc1max Qc2min Qc2max ramp_agc ramp_10 ramp_30 ramp_q apf mu_Pmax mu_Pmin"
    " mu_Qmax mu_Qmin",
    "branch": " angmax Pf Qf Pt Qt mu_Sf mu_St mu_angmin mu_angmax",
}
_PWL_HEADER = "1 startup shutdown n x1 y1 ... xn yn"


def _number(v: float) -> str:
    """Spell a float so that it parses back to the same bits (NaN payloads aside)."""
    if v != v:
        return "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    if v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    return repr(v)


def _table(case: dict[str, Any], name: str) -> np.ndarray:
    """``case[name]`` as a 2-D float64 array (real part of complex input)."""
    try:
        arr = np.atleast_2d(np.real(np.asarray(case[name]))).astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise CaseFormatError(f"case[{name!r}] is not a numeric array: {exc}") from exc
    if arr.ndim != 2:
        raise CaseFormatError(f"case[{name!r}] must be 2-D, got shape {arr.shape}")
    return arr


def format_matpower(case: dict[str, Any], name: str = "case") -> str:
    """Write ``case`` as the text of a MATPOWER version-2 case file (``function mpc = name``).

    Numbers are written so that :func:`parse_matpower` gives back the same float64
    values; complex arrays (pandapower's ppc) contribute their real part.
    """
    if _IDENT.fullmatch(name) is None:
        raise CaseFormatError(f"{name!r} is not a valid MATLAB function name")
    for key in _REQUIRED:
        if key not in case:
            raise CaseFormatError(f"case has no {key!r}")
    base = _table(case, "baseMVA")
    if base.size != 1:
        raise CaseFormatError(f"case['baseMVA'] must be one number, got shape {base.shape}")
    out = [
        f"function mpc = {name}",
        f"%{name.upper()}  MATPOWER case written by gridphysics.",
        "",
        "%% MATPOWER Case Format : Version 2",
        "mpc.version = '2';",
        "",
        "%%-----  Power Flow Data  -----%%",
        "%% system MVA base",
        f"mpc.baseMVA = {_number(float(base[0, 0]))};",
    ]
    for key in _TABLES:
        if key not in case or case[key] is None:
            continue
        arr = _table(case, key)
        title, heads = _SECTIONS[key]
        if key == "gencost" and arr.size and arr[0, 0] == 1:
            heads = _PWL_HEADER
        heads = (heads + _MORE_HEADS.get(key, "")).split()[: max(arr.shape[1], 2)]
        out += ["", f"%% {title}", "%\t" + "\t".join(heads), f"mpc.{key} = ["]
        # spell each distinct bit pattern once (keeps -0.0 apart from 0.0)
        bits, inverse = np.unique(arr.view(np.int64).ravel(), return_inverse=True)
        words = np.array([_number(v) for v in bits.view(np.float64).tolist()], dtype=object)
        for row in words[inverse.reshape(arr.shape)].tolist():
            out.append("\t" + "\t".join(row) + ";")
        out.append("];")
    if case.get("bus_name") is not None:
        out += ["", "%% bus names", "mpc.bus_name = {"]
        for bus_name in case["bus_name"]:
            text = str(bus_name)
            if "\n" in text or "\r" in text:
                raise CaseFormatError(f"bus name {text!r} contains a line break")
            out.append("\t'" + text.replace("'", "''") + "';")
        out.append("};")
    return "\n".join(out) + "\n"


def write_matpower(
    case: dict[str, Any],
    path: str | os.PathLike[str],
    check: Callable[[str], None] | None = None,
) -> None:
    """Write ``case`` to ``path`` as a MATPOWER file named after the file's stem;
    ``check`` sees the text first and may refuse it (raise) before the file is opened."""
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    name = re.sub(r"\W", "_", stem, flags=re.ASCII)
    if _IDENT.fullmatch(name) is None:
        name = "case_" + name
    text = format_matpower(case, name)
    if check is not None:
        check(text)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
