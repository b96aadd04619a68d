"""SOQL engine: parse a query, check it against the schema, run it on the SQLite store.

``prepare()`` turns SOQL text into a :class:`Prepared` query. The REST and Bulk layers then take
a snapshot of matching rowids (``rowids``) and render pages of it (``records`` / ``csv_rows``),
or ask for ``total``/``aggregate_records``.

Semantics follow Salesforce (``shared/reference/salesforce-api.md`` §2.4):

* keywords, objects and fields are case-insensitive; text comparisons, LIKE and ORDER BY on text
  are case-insensitive; ids compare on their canonical 18-char form;
* two-valued null logic: ``f != 'x'`` and ``f NOT IN (...)`` match rows where ``f`` is null, and
  ``NOT (...)`` is the exact complement. Every comparison is compiled in a positive and a
  negated form (NOT is pushed down to the leaves) so SQL's NULLs never leak through;
* date literals compare only with date fields, datetime literals only with datetime fields;
  relative date literals are ranges relative to ``now`` (UTC);
* polymorphic parents (``Owner`` on Lead/Task/Event, ``Who``, ``What``) render as the ``Name``
  sObject and are resolved after the page is fetched, per key prefix.

Every user-supplied value reaches SQLite as a bound parameter. Identifiers come from the schema
only (canonical names, quoted).
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, date, datetime, timedelta

from .errors import ApiError
from .ids import normalize_id
from .schema import (
    COMPOUND_TYPES,
    ID_TYPES,
    INT_TYPES,
    REAL_TYPES,
    TEXT_TYPES,
    Field,
    Schema,
    SObject,
)
from .storage import quote
from .values import to_csv, to_json

__all__ = ["prepare", "Prepared"]

MAX_OFFSET = 2000
FIELDS_LIMIT = 200

_NO_SUCH_COLUMN = ("No such column '{name}' on entity '{entity}'. If you are attempting to use a "
                   "custom field, be sure to append the '__c' after the custom field name. Please "
                   "reference your WSDL or the describe call for the appropriate names.")
_NO_SUCH_TYPE = ("sObject type '{name}' is not supported. If you are attempting to use a custom "
                 "object, be sure to append the '__c' after the entity name. Please reference your "
                 "WSDL or the describe call for the appropriate names.")
_BAD_RELATIONSHIP = ("Didn't understand relationship '{name}' in field path. If you are attempting "
                     "to use a custom relationship, be sure to append the '__r' after the custom "
                     "relationship name. Please reference your WSDL or the describe call for the "
                     "appropriate names.")
_BAD_CHILD_RELATIONSHIP = ("Didn't understand relationship '{name}' in FROM part of query call. If "
                           "you are attempting to use a custom relationship, be sure to append the "
                           "'__r' after the custom relationship name. Please reference your WSDL or "
                           "the describe call for the appropriate names.")

# The ``Name`` sObject: what a polymorphic parent exposes. Types follow the Name object describe.
_NAME_FIELDS = {f.name.lower(): f for f in (
    Field("Id", "id"), Field("Name", "string"), Field("Type", "picklist"),
    Field("FirstName", "string"), Field("LastName", "string"), Field("Alias", "string"),
    Field("Email", "email"), Field("Title", "string"), Field("IsActive", "boolean"),
    Field("Username", "string"), Field("Phone", "phone"),
)}
# Key prefixes of objects a polymorphic lookup may point at but the emulator does not model.
_EXTRA_PREFIXES = {"Group": "00G", "Calendar": "023", "Queue": "00G"}
_EXTRA_NAMES = {"00G": "Group", "023": "Calendar"}

_AGGREGATES = {"COUNT", "COUNT_DISTINCT", "MAX", "MIN", "SUM", "AVG"}
_WRAPPERS = {"TOLABEL", "FORMAT", "CONVERTCURRENCY"}
_CLAUSE_WORDS = {"FROM", "WHERE", "USING", "WITH", "GROUP", "HAVING", "ORDER", "LIMIT", "OFFSET",
                 "FOR", "UPDATE", "AND", "OR", "NOT", "IN", "LIKE", "INCLUDES", "EXCLUDES",
                 "ASC", "DESC", "NULLS", "SELECT", "TYPEOF"}

_SIMPLE_DATE_LITERALS = {
    "YESTERDAY", "TODAY", "TOMORROW", "LAST_WEEK", "THIS_WEEK", "NEXT_WEEK", "LAST_MONTH",
    "THIS_MONTH", "NEXT_MONTH", "LAST_90_DAYS", "NEXT_90_DAYS", "THIS_QUARTER", "LAST_QUARTER",
    "NEXT_QUARTER", "THIS_YEAR", "LAST_YEAR", "NEXT_YEAR",
}
_N_DATE_LITERALS = {
    "LAST_N_DAYS", "NEXT_N_DAYS", "N_DAYS_AGO", "LAST_N_HOURS", "NEXT_N_HOURS", "LAST_N_WEEKS",
    "NEXT_N_WEEKS", "N_WEEKS_AGO", "LAST_N_MONTHS", "NEXT_N_MONTHS", "N_MONTHS_AGO",
    "LAST_N_QUARTERS", "NEXT_N_QUARTERS", "N_QUARTERS_AGO", "LAST_N_YEARS", "NEXT_N_YEARS",
    "N_YEARS_AGO",
}


# --------------------------------------------------------------------------------------------
# errors


def _position_header(soql: str, pos: int) -> str:
    """Salesforce's echo of the offending line with a caret, plus ``ERROR at Row:r:Column:c``."""
    pos = max(0, min(pos, len(soql)))
    start = soql.rfind("\n", 0, pos) + 1
    end = soql.find("\n", pos)
    line = soql[start:end if end >= 0 else len(soql)].rstrip("\r")
    row = soql.count("\n", 0, pos) + 1
    col = pos - start + 1
    return f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n"


def _malformed(soql: str, pos: int | None, message: str) -> ApiError:
    text = message if pos is None else _position_header(soql, pos) + message
    return ApiError(400, "MALFORMED_QUERY", text)


# --------------------------------------------------------------------------------------------
# tokens

@dataclass(slots=True)
class _Tok:
    kind: str        # ident str num date datetime op ( ) , : . eof
    text: str        # source text
    pos: int
    value: object = None
    like: str | None = None   # str tokens: the SQL LIKE pattern (ESCAPE '\')


_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUM_RE = re.compile(r"\d+(?:\.\d+)?")
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DT_HEAD_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?")
_TZ_RE = re.compile(r"Z|[+-](\d{2}):?(\d{2})")
_ESCAPES = {"'": "'", "\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}


def _no_viable(soql: str, pos: int) -> ApiError:
    ch = soql[pos] if pos < len(soql) else "<EOF>"
    row = soql.count("\n", 0, pos) + 1
    col0 = pos - (soql.rfind("\n", 0, pos) + 1)
    return _malformed(soql, pos, f"line {row}:{col0} no viable alternative at character '{ch}'")


def _tokenize(soql: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(soql)
    while i < n:
        c = soql[i]
        if c in " \t\r\n\f":
            i += 1
            continue
        if c.isalpha() or c == "_":
            m = _IDENT_RE.match(soql, i)
            toks.append(_Tok("ident", m.group(), i))
            i = m.end()
            continue
        if c.isdigit():
            m = _DATE_RE.match(soql, i)
            if m:
                nxt = soql[m.end():m.end() + 1]
                if nxt == "T":
                    i = _datetime_token(soql, i, toks)
                    continue
                if not (nxt.isalnum() or nxt == "_"):
                    try:
                        value = date(int(m[1]), int(m[2]), int(m[3])).isoformat()
                    except ValueError:
                        raise _malformed(soql, i, f"Invalid date: {m.group()}") from None
                    toks.append(_Tok("date", m.group(), i, value))
                    i = m.end()
                    continue
            m = _NUM_RE.match(soql, i)
            end = m.end()
            if end < n and (soql[end].isalpha() or soql[end] == "_"):
                raise _no_viable(soql, end)
            text = m.group()
            toks.append(_Tok("num", text, i, float(text) if "." in text else int(text)))
            i = end
            continue
        if c == "'":
            i = _string_token(soql, i, toks)
            continue
        if c in "(),:.":
            toks.append(_Tok(c, c, i))
            i += 1
            continue
        two = soql[i:i + 2]
        if two in ("!=", "<>", "<=", ">="):
            toks.append(_Tok("op", two, i))
            i += 2
            continue
        if c in "=<>+-":
            toks.append(_Tok("op", c, i))
            i += 1
            continue
        raise _no_viable(soql, i)
    toks.append(_Tok("eof", "<EOF>", n))
    return toks


def _datetime_token(soql: str, i: int, toks: list[_Tok]) -> int:
    m = _DT_HEAD_RE.match(soql, i)
    if not m:
        # point at the first character the datetime grammar cannot accept
        j = i + 11
        for want in "dd:dd:dd":
            if j >= len(soql) or (soql[j] != ":" if want == ":" else not soql[j].isdigit()):
                break
            j += 1
        raise _no_viable(soql, j)
    tz = _TZ_RE.match(soql, m.end())
    if not tz:
        raise _no_viable(soql, m.end())
    end = tz.end()
    if end < len(soql) and (soql[end].isalnum() or soql[end] in "_.:"):
        raise _no_viable(soql, end)
    y, mo, d, h, mi, s, frac = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
        if tz.group() != "Z":
            sign = 1 if tz.group()[0] == "+" else -1
            dt -= sign * timedelta(hours=int(tz[1]), minutes=int(tz[2]))
    except (ValueError, OverflowError):
        raise _malformed(soql, i, f"Invalid datetime: {soql[i:end]}") from None
    fractional = bool(frac and int(frac))
    toks.append(_Tok("datetime", soql[i:end], i, (dt.strftime("%Y-%m-%dT%H:%M:%S"), fractional)))
    return end


def _string_token(soql: str, i: int, toks: list[_Tok]) -> int:
    plain: list[str] = []
    like: list[str] = []
    j = i + 1
    n = len(soql)
    while True:
        if j >= n:
            row = soql.count("\n") + 1
            col0 = n - (soql.rfind("\n") + 1)
            raise _malformed(soql, i, f"line {row}:{col0} mismatched character '<EOF>' "
                                      "expecting \"'\"")
        c = soql[j]
        if c == "'":
            break
        if c == "\\":
            e = soql[j + 1:j + 2]
            if e in _ESCAPES:
                ch = _ESCAPES[e]
                plain.append(ch)
                like.append("\\\\" if ch == "\\" else ch)
            elif e in ("%", "_"):
                plain.append(e)
                like.append("\\" + e)
            elif e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", soql[j + 2:j + 6] or ""):
                ch = chr(int(soql[j + 2:j + 6], 16))
                plain.append(ch)
                like.append("\\\\" if ch == "\\" else ch)
                j += 4
            else:
                raise _malformed(soql, i, f"Invalid string literal '\\{e}'. Illegal character "
                                          f"sequence '\\{e}' in string literal.")
            j += 2
            continue
        plain.append(c)
        like.append(c)
        j += 1
    toks.append(_Tok("str", soql[i:j + 1], i, "".join(plain), "".join(like)))
    return j + 1


# --------------------------------------------------------------------------------------------
# syntax tree

@dataclass
class _PathRef:
    parts: list[str]
    pos: int

    @property
    def text(self) -> str:
        return ".".join(self.parts)


@dataclass
class _Func:
    name: str                      # upper case
    arg: _PathRef | None
    pos: int


@dataclass
class _Item:
    kind: str                      # field, agg, count, fields, label, subquery
    ref: _PathRef | None = None
    func: _Func | None = None
    alias: str | None = None
    fields_kind: str | None = None
    sub: _Query | None = None
    pos: int = 0


@dataclass
class _Lit:
    kind: str                      # str num bool null date datetime rel
    value: object
    pos: int
    text: str
    like: str | None = None


@dataclass
class _Cond:
    kind: str                      # and or not cmp in like includes
    children: list = dc_field(default_factory=list)
    operand: object = None         # _PathRef | _Func
    op: str = ""
    value: object = None           # _Lit | list[_Lit] | _Query
    negate: bool = False           # NOT IN / EXCLUDES
    pos: int = 0


@dataclass
class _Order:
    operand: object
    desc: bool
    nulls_first: bool


@dataclass
class _Query:
    items: list[_Item]
    obj_name: str
    obj_pos: int
    alias: str | None = None
    where: _Cond | None = None
    group_by: list[_PathRef] = dc_field(default_factory=list)
    having: _Cond | None = None
    order_by: list[_Order] = dc_field(default_factory=list)
    limit: int | None = None
    limit_pos: int = 0
    offset: int | None = None
    offset_pos: int = 0
    pos: int = 0


class _Parser:
    def __init__(self, soql: str):
        self.soql = soql
        self.toks = _tokenize(soql)
        self.i = 0

    # -- helpers
    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def is_kw(self, word: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == "ident" and tok.text.upper() == word

    def accept_kw(self, word: str) -> bool:
        if self.is_kw(word):
            self.i += 1
            return True
        return False

    def expect_kw(self, word: str) -> _Tok:
        if not self.is_kw(word):
            raise self.unexpected(self.peek())
        return self.next()

    def expect(self, kind: str) -> _Tok:
        if self.peek().kind != kind:
            raise self.unexpected(self.peek())
        return self.next()

    def unexpected(self, tok: _Tok) -> ApiError:
        return _malformed(self.soql, tok.pos, f"unexpected token: {tok.text}")

    # -- grammar
    def parse(self) -> _Query:
        first = self.peek()
        if not self.is_kw("SELECT"):
            raise ApiError(400, "MALFORMED_QUERY", f"unexpected token: {first.text}")
        query = self.query()
        if self.peek().kind != "eof":
            raise self.unexpected(self.peek())
        return query

    def query(self) -> _Query:
        start = self.expect_kw("SELECT").pos
        items = [self.select_item()]
        while self.peek().kind == ",":
            self.next()
            items.append(self.select_item())
        self.expect_kw("FROM")
        obj = self.expect("ident")
        q = _Query(items=items, obj_name=obj.text, obj_pos=obj.pos, pos=start)
        if self.peek().kind == "ident" and self.peek().text.upper() not in _CLAUSE_WORDS:
            q.alias = self.next().text
        if self.accept_kw("USING"):
            self.expect_kw("SCOPE")
            self.expect("ident")
        if self.accept_kw("WHERE"):
            q.where = self.condition()
        if self.is_kw("WITH"):
            self.next()
            mode = self.expect("ident")
            if mode.text.upper() not in {"SECURITY_ENFORCED", "USER_MODE", "SYSTEM_MODE"}:
                raise self.unexpected(mode)
        if self.accept_kw("GROUP"):
            self.expect_kw("BY")
            if self.peek(1).kind == "(" and self.peek().text.upper() in {"ROLLUP", "CUBE"}:
                raise _malformed(self.soql, self.peek().pos,
                                 f"GROUP BY {self.peek().text.upper()} is not supported")
            q.group_by.append(self.path())
            while self.peek().kind == ",":
                self.next()
                q.group_by.append(self.path())
        if self.accept_kw("HAVING"):
            q.having = self.condition()
        if self.accept_kw("ORDER"):
            self.expect_kw("BY")
            q.order_by.append(self.order_item())
            while self.peek().kind == ",":
                self.next()
                q.order_by.append(self.order_item())
        if self.is_kw("LIMIT"):
            q.limit_pos = self.next().pos
            q.limit = self.integer()
        if self.is_kw("OFFSET"):
            q.offset_pos = self.next().pos
            q.offset = self.integer()
        if self.accept_kw("FOR"):
            mode = self.expect("ident")
            if mode.text.upper() not in {"VIEW", "REFERENCE", "UPDATE"}:
                raise self.unexpected(mode)
        if self.is_kw("UPDATE") and self.peek(1).kind == "ident" and \
                self.peek(1).text.upper() in {"TRACKING", "VIEWSTAT"}:
            self.i += 2
        return q

    def integer(self) -> int:
        tok = self.peek()
        if tok.kind != "num" or not isinstance(tok.value, int):
            raise self.unexpected(tok)
        self.next()
        return tok.value

    def path(self) -> _PathRef:
        tok = self.expect("ident")
        parts = [tok.text]
        while self.peek().kind == ".":
            self.next()
            parts.append(self.expect("ident").text)
        return _PathRef(parts, tok.pos)

    def func_or_path(self, *, allow_funcs: bool = True):
        tok = self.peek()
        if tok.kind == "ident" and self.peek(1).kind == "(" and allow_funcs:
            name = tok.text.upper()
            if name not in _AGGREGATES and name not in _WRAPPERS:
                raise _malformed(self.soql, tok.pos, f"unexpected token: {tok.text}")
            self.i += 2
            if self.peek().kind == ")":
                if name != "COUNT":
                    raise self.unexpected(self.peek())
                self.next()
                return _Func("COUNT", None, tok.pos)
            ref = self.path()
            self.expect(")")
            return _Func(name, ref, tok.pos)
        if tok.kind != "ident":
            raise self.unexpected(tok)
        return self.path()

    def alias(self) -> str | None:
        tok = self.peek()
        if tok.kind == "ident" and tok.text.upper() not in _CLAUSE_WORDS:
            self.next()
            return tok.text
        return None

    def select_item(self) -> _Item:
        tok = self.peek()
        if tok.kind == "(":
            self.next()
            if not self.is_kw("SELECT"):
                raise self.unexpected(self.peek())
            sub = self.query()
            self.expect(")")
            return _Item("subquery", sub=sub, pos=tok.pos)
        if self.is_kw("TYPEOF"):
            raise _malformed(self.soql, tok.pos, "TYPEOF is not supported by this org")
        if tok.kind == "ident" and self.peek(1).kind == "(" and tok.text.upper() == "FIELDS":
            self.i += 2
            kind = self.expect("ident")
            if kind.text.upper() not in {"ALL", "STANDARD", "CUSTOM"}:
                raise self.unexpected(kind)
            self.expect(")")
            return _Item("fields", fields_kind=kind.text.upper(), pos=tok.pos)
        target = self.func_or_path()
        if isinstance(target, _Func):
            if target.arg is None:
                item = _Item("count", func=target, pos=tok.pos)
                return item
            kind = "label" if target.name in _WRAPPERS else "agg"
            return _Item(kind, ref=target.arg, func=target, alias=self.alias(), pos=tok.pos)
        return _Item("field", ref=target, alias=self.alias(), pos=tok.pos)

    def order_item(self) -> _Order:
        operand = self.func_or_path()
        desc = False
        if self.accept_kw("DESC"):
            desc = True
        else:
            self.accept_kw("ASC")
        nulls_first = not desc
        if self.accept_kw("NULLS"):
            if self.accept_kw("FIRST"):
                nulls_first = True
            else:
                self.expect_kw("LAST")
                nulls_first = False
        return _Order(operand, desc, nulls_first)

    def condition(self) -> _Cond:
        first = self.unary()
        parts = [first]
        joiner = None
        while self.is_kw("AND") or self.is_kw("OR"):
            tok = self.peek()
            word = tok.text.upper()
            if joiner is not None and word != joiner:
                raise self.unexpected(tok)
            joiner = word
            self.next()
            parts.append(self.unary())
        if joiner is None:
            return first
        return _Cond(joiner.lower(), children=parts, pos=first.pos)

    def unary(self) -> _Cond:
        tok = self.peek()
        if self.accept_kw("NOT"):
            return _Cond("not", children=[self.unary()], pos=tok.pos)
        if tok.kind == "(":
            self.next()
            inner = self.condition()
            self.expect(")")
            return inner
        operand = self.func_or_path()
        pos = tok.pos
        op = self.peek()
        if op.kind == "op" and op.text not in "+-":
            self.next()
            return _Cond("cmp", operand=operand, op=op.text, value=self.value(), pos=pos)
        negate = False
        if self.is_kw("NOT") and self.is_kw("IN", 1):
            self.i += 1
            negate = True
        if self.accept_kw("IN"):
            self.expect("(")
            if self.is_kw("SELECT"):
                sub = self.query()
                self.expect(")")
                return _Cond("in", operand=operand, value=sub, negate=negate, pos=pos)
            values = [self.value()]
            while self.peek().kind == ",":
                self.next()
                values.append(self.value())
            self.expect(")")
            return _Cond("in", operand=operand, value=values, negate=negate, pos=pos)
        if negate:
            raise self.unexpected(self.peek())
        if self.accept_kw("LIKE"):
            val = self.value()
            return _Cond("like", operand=operand, value=val, pos=pos)
        if self.is_kw("INCLUDES") or self.is_kw("EXCLUDES"):
            excl = self.next().text.upper() == "EXCLUDES"
            self.expect("(")
            values = [self.value()]
            while self.peek().kind == ",":
                self.next()
                values.append(self.value())
            self.expect(")")
            return _Cond("includes", operand=operand, value=values, negate=excl, pos=pos)
        raise self.unexpected(self.peek())

    def value(self) -> _Lit:
        tok = self.next()
        if tok.kind == "str":
            return _Lit("str", tok.value, tok.pos, tok.text, tok.like)
        if tok.kind == "op" and tok.text in "+-" and self.peek().kind == "num":
            num = self.next()
            return _Lit("num", -num.value if tok.text == "-" else num.value, tok.pos,
                        tok.text + num.text)
        if tok.kind == "num":
            return _Lit("num", tok.value, tok.pos, tok.text)
        if tok.kind == "date":
            return _Lit("date", tok.value, tok.pos, tok.text)
        if tok.kind == "datetime":
            return _Lit("datetime", tok.value, tok.pos, tok.text)
        if tok.kind == "ident":
            word = tok.text.upper()
            if word in {"TRUE", "FALSE"}:
                return _Lit("bool", word == "TRUE", tok.pos, tok.text)
            if word == "NULL":
                return _Lit("null", None, tok.pos, tok.text)
            if word in _SIMPLE_DATE_LITERALS:
                return _Lit("rel", (word, 0), tok.pos, tok.text)
            if word in _N_DATE_LITERALS:
                if self.peek().kind != ":":
                    raise self.unexpected(self.peek())
                self.next()
                num = self.peek()
                if num.kind != "num" or not isinstance(num.value, int):
                    raise self.unexpected(num)
                self.next()
                return _Lit("rel", (word, num.value), tok.pos, f"{tok.text}:{num.text}")
        if tok.kind == ":":
            raise _malformed(self.soql, tok.pos, "unexpected token: ':' (bind variables are only "
                                                 "available in Apex)")
        raise self.unexpected(tok)


# --------------------------------------------------------------------------------------------
# relative dates

def _month_start(year: int, month: int) -> date:
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return date(year, month, 1)


def _date_range(word: str, n: int, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of a relative date literal, as aware UTC datetimes."""
    now = now.astimezone(UTC)
    today = now.date()

    def at(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=UTC)

    day = timedelta(days=1)
    week_start = today - timedelta(days=(today.weekday() + 1) % 7)   # weeks start on Sunday
    quarter_first_month = 3 * ((today.month - 1) // 3) + 1
    if word == "TODAY":
        return at(today), at(today + day)
    if word == "YESTERDAY":
        return at(today - day), at(today)
    if word == "TOMORROW":
        return at(today + day), at(today + 2 * day)
    if word in {"THIS_WEEK", "LAST_WEEK", "NEXT_WEEK"}:
        shift = {"THIS_WEEK": 0, "LAST_WEEK": -1, "NEXT_WEEK": 1}[word]
        start = week_start + timedelta(weeks=shift)
        return at(start), at(start + timedelta(weeks=1))
    if word in {"THIS_MONTH", "LAST_MONTH", "NEXT_MONTH"}:
        shift = {"THIS_MONTH": 0, "LAST_MONTH": -1, "NEXT_MONTH": 1}[word]
        return (at(_month_start(today.year, today.month + shift)),
                at(_month_start(today.year, today.month + shift + 1)))
    if word in {"THIS_QUARTER", "LAST_QUARTER", "NEXT_QUARTER"}:
        shift = {"THIS_QUARTER": 0, "LAST_QUARTER": -3, "NEXT_QUARTER": 3}[word]
        return (at(_month_start(today.year, quarter_first_month + shift)),
                at(_month_start(today.year, quarter_first_month + shift + 3)))
    if word in {"THIS_YEAR", "LAST_YEAR", "NEXT_YEAR"}:
        shift = {"THIS_YEAR": 0, "LAST_YEAR": -1, "NEXT_YEAR": 1}[word]
        return at(date(today.year + shift, 1, 1)), at(date(today.year + shift + 1, 1, 1))
    if word == "LAST_90_DAYS":
        return at(today - 90 * day), at(today + day)
    if word == "NEXT_90_DAYS":
        return at(today + day), at(today + 91 * day)
    if word == "LAST_N_DAYS":
        return at(today - n * day), at(today + day)
    if word == "NEXT_N_DAYS":
        return at(today + day), at(today + (n + 1) * day)
    if word == "N_DAYS_AGO":
        return at(today - n * day), at(today - (n - 1) * day)
    if word == "LAST_N_HOURS":
        return now - timedelta(hours=n), now + timedelta(seconds=1)
    if word == "NEXT_N_HOURS":
        return now, now + timedelta(hours=n)
    if word == "LAST_N_WEEKS":
        return at(week_start - timedelta(weeks=n)), at(week_start)
    if word == "NEXT_N_WEEKS":
        return at(week_start + timedelta(weeks=1)), at(week_start + timedelta(weeks=n + 1))
    if word == "N_WEEKS_AGO":
        return at(week_start - timedelta(weeks=n)), at(week_start - timedelta(weeks=n - 1))
    months = {"MONTHS": (1, today.month), "QUARTERS": (3, quarter_first_month)}
    for unit, (size, first) in months.items():
        if word == f"LAST_N_{unit}":
            return (at(_month_start(today.year, first - n * size)),
                    at(_month_start(today.year, first)))
        if word == f"NEXT_N_{unit}":
            return (at(_month_start(today.year, first + size)),
                    at(_month_start(today.year, first + (n + 1) * size)))
        if word == f"N_{unit}_AGO":
            return (at(_month_start(today.year, first - n * size)),
                    at(_month_start(today.year, first - (n - 1) * size)))
    if word == "LAST_N_YEARS":
        return at(date(today.year - n, 1, 1)), at(date(today.year, 1, 1))
    if word == "NEXT_N_YEARS":
        return at(date(today.year + 1, 1, 1)), at(date(today.year + n + 1, 1, 1))
    if word == "N_YEARS_AGO":
        return at(date(today.year - n, 1, 1)), at(date(today.year - n + 1, 1, 1))
    raise ValueError(word)


# --------------------------------------------------------------------------------------------
# name resolution

@dataclass
class _Resolved:
    steps: list[tuple[Field, SObject]]    # non-polymorphic parent hops
    poly: Field | None                     # a final polymorphic hop (leaf is a Name field)
    leaf: Field
    rel_names: list[str]                   # canonical relationship names, in order
    pos: int

    @property
    def column(self) -> str:
        return ".".join([*self.rel_names, self.leaf.name])


class _Ctx:
    """State shared by a query and its subqueries while compiling."""

    def __init__(self, soql: str, schema: Schema, now: datetime, include_deleted: bool,
                 bulk: bool):
        self.soql = soql
        self.schema = schema
        self.now = now
        self.include_deleted = include_deleted
        self.bulk = bulk
        self._alias = 0

    def new_alias(self) -> str:
        self._alias += 1
        return f"t{self._alias}"

    def invalid_field(self, pos: int, message: str) -> ApiError:
        return ApiError(400, "INVALID_FIELD", _position_header(self.soql, pos) + message)

    def malformed(self, pos: int | None, message: str) -> ApiError:
        return _malformed(self.soql, pos, message)

    def resolve(self, obj: SObject, ref: _PathRef, alias: str | None = None) -> _Resolved:
        parts = list(ref.parts)
        if len(parts) > 1 and obj.relationship(parts[0]) is None and \
                parts[0].lower() in {obj.name.lower(), (alias or "").lower()}:
            parts = parts[1:]
        cur = obj
        steps: list[tuple[Field, SObject]] = []
        poly: Field | None = None
        rel_names: list[str] = []
        for rel in parts[:-1]:
            fk = None if poly is not None else cur.relationship(rel)
            if fk is None:
                raise self.invalid_field(ref.pos, _BAD_RELATIONSHIP.format(name=rel))
            rel_names.append(fk.relationship_name)
            if fk.polymorphic:
                poly = fk
                continue
            parent = self.schema.get(fk.reference_to[0]) if fk.reference_to else None
            if parent is None:
                raise self.invalid_field(ref.pos, _BAD_RELATIONSHIP.format(name=rel))
            steps.append((fk, parent))
            cur = parent
        name = parts[-1]
        if poly is not None:
            leaf = _NAME_FIELDS.get(name.lower())
            entity = "Name"
        else:
            leaf = cur.field(name)
            entity = cur.name
        if leaf is None:
            raise self.invalid_field(ref.pos, _NO_SUCH_COLUMN.format(name=name, entity=entity))
        return _Resolved(steps, poly, leaf, rel_names, ref.pos)

    def poly_targets(self, fk: Field) -> list[tuple[str, str, SObject | None]]:
        """(object name, key prefix, SObject or None) for each target of a polymorphic lookup."""
        out = []
        for name in fk.reference_to:
            obj = self.schema.get(name)
            if obj is not None:
                out.append((obj.name, obj.key_prefix, obj))
            elif name in _EXTRA_PREFIXES:
                out.append((name, _EXTRA_PREFIXES[name], None))
        return out


def _sql_str(text: str) -> str:
    """A SQL string literal for schema-derived text (object names, key prefixes)."""
    return "'" + text.replace("'", "''") + "'"


class _Joins:
    """LEFT JOINs of parent tables needed by one SQL statement."""

    def __init__(self, ctx: _Ctx, base: str):
        self.ctx = ctx
        self.base = base
        self.aliases: dict[tuple[str, ...], str] = {}
        self.clauses: list[str] = []

    def alias_for(self, steps: list[tuple[Field, SObject]]) -> str:
        cur = self.base
        key: tuple[str, ...] = ()
        for fk, parent in steps:
            key += (fk.name,)
            alias = self.aliases.get(key)
            if alias is None:
                alias = self.ctx.new_alias()
                self.aliases[key] = alias
                self.clauses.append(f"LEFT JOIN {quote(parent.name)} {alias} "
                                    f"ON {alias}.\"Id\" = {cur}.{quote(fk.name)}")
            cur = alias
        return cur

    def sql(self) -> str:
        return " ".join(self.clauses)

    def expr(self, r: _Resolved) -> str:
        """SQL expression for a resolved path (never contains bound values)."""
        alias = self.alias_for(r.steps)
        if r.poly is None:
            return f"{alias}.{quote(r.leaf.name)}"
        fk = f"{alias}.{quote(r.poly.name)}"
        leaf = r.leaf.name
        if leaf == "Id":
            return fk
        whens = []
        for name, prefix, obj in self.ctx.poly_targets(r.poly):
            if leaf == "Type":
                whens.append(f"WHEN {_sql_str(prefix)} THEN {_sql_str(name)}")
            elif obj is not None and obj.field(leaf) is not None:
                whens.append(f"WHEN {_sql_str(prefix)} THEN (SELECT p.{quote(leaf)} FROM "
                             f"{quote(obj.name)} p WHERE p.\"Id\" = {fk})")
        if not whens:
            return "NULL"
        collate = " COLLATE NOCASE" if r.leaf.type in TEXT_TYPES else ""
        return f"(CASE substr({fk}, 1, 3) {' '.join(whens)} END){collate}"


def _not_deleted(obj: SObject, alias: str) -> list[str]:
    """Filters of ``query`` (vs ``queryAll``): no deleted rows, no archived activities.

    Written as an anti-join on rowids: the IsDeleted index yields the (usually few) deleted
    rowids once, and the main scan can stay on whatever index serves the WHERE / ORDER BY
    (e.g. ``(SystemModstamp, Id)``) without a table lookup per row.
    """
    table = quote(obj.name)
    hidden = f"SELECT rowid FROM {table} WHERE \"IsDeleted\" = 1"
    if obj.archivable and "IsArchived" in obj.fields:
        hidden += f" UNION ALL SELECT rowid FROM {table} WHERE \"IsArchived\" = 1"
    return [f"{alias}.rowid NOT IN ({hidden})"]


# --------------------------------------------------------------------------------------------
# WHERE / HAVING compilation

_TYPE_NAMES = {"datetime": "dateTime", "date": "date", "boolean": "boolean", "int": "int",
               "double": "double", "currency": "double", "percent": "double"}


class _Where:
    """Compiles a condition tree against one object into SQL + params (NOT pushed to leaves)."""

    def __init__(self, ctx: _Ctx, obj: SObject, joins: _Joins, alias: str | None,
                 aggregates: dict | None = None):
        self.ctx = ctx
        self.obj = obj
        self.joins = joins
        self.alias = alias
        self.aggregates = aggregates   # HAVING: function -> (sql, Field)
        self.params: list = []

    def compile(self, cond: _Cond, neg: bool = False) -> str:
        kind = cond.kind
        if kind == "not":
            return self.compile(cond.children[0], not neg)
        if kind in ("and", "or"):
            joiner = " AND " if (kind == "and") != neg else " OR "
            return "(" + joiner.join(self.compile(c, neg) for c in cond.children) + ")"
        expr, fld = self.operand(cond.operand)
        if kind == "cmp":
            return self.comparison(cond, expr, fld, neg)
        if kind == "in":
            return self.in_list(cond, expr, fld, neg)
        if kind == "like":
            lit = cond.value
            if lit.kind != "str":
                raise self._type_error(fld, lit)
            if fld.type not in TEXT_TYPES and fld.type not in ID_TYPES:
                raise ApiError(400, "INVALID_QUERY_FILTER_OPERATOR",
                               _position_header(self.ctx.soql, cond.pos) +
                               f"invalid operator on {_TYPE_NAMES.get(fld.type, fld.type)} field: "
                               f"{fld.name}")
            self.params.append(lit.like)
            return self._leaf(expr, f"{expr} LIKE ? ESCAPE '\\'", True, neg)
        if kind == "includes":
            if fld.type not in {"multipicklist", "picklist"}:
                raise ApiError(400, "INVALID_QUERY_FILTER_OPERATOR",
                               _position_header(self.ctx.soql, cond.pos) +
                               "includes or excludes operator only valid on multipicklist field")
            terms = []
            for lit in cond.value:
                if lit.kind != "str":
                    raise self._type_error(fld, lit)
                parts = [p.strip().lower() for p in lit.value.split(";") if p.strip()]
                ands = []
                for part in parts:
                    self.params.append(f";{part};")
                    ands.append(f"instr(';' || lower(replace({expr}, '; ', ';')) || ';', ?) > 0")
                terms.append("(" + (" AND ".join(ands) or "0") + ")")
            return self._leaf(expr, "(" + " OR ".join(terms) + ")", not cond.negate, neg)
        raise ValueError(kind)

    # A leaf predicate ``q`` is NULL only when ``expr`` is NULL. ``null_false`` says whether rows
    # with a null operand fail the positive condition (``=``) or pass it (``!=``, in which case
    # ``q`` is the complement, e.g. ``=``).
    @staticmethod
    def _leaf(expr: str, q: str, null_false: bool, neg: bool) -> str:
        if null_false != neg:
            return q
        return f"({expr} IS NULL OR NOT ({q}))"

    def operand(self, node) -> tuple[str, Field]:
        if isinstance(node, _Func):
            if self.aggregates is None or node.name not in _AGGREGATES:
                raise self.ctx.malformed(node.pos, f"unexpected token: {node.name}")
            return _aggregate_expr(self.ctx, self.obj, self.joins, node, self.alias)
        r = self.ctx.resolve(self.obj, node, self.alias)
        if r.leaf.type in COMPOUND_TYPES:
            raise self.ctx.invalid_field(node.pos, f"field '{r.leaf.name}' can not be filtered "
                                                   "in a query call")
        if self.aggregates is not None and r.column.lower() not in self.aggregates:
            raise self.ctx.malformed(node.pos, f"Field must be grouped or aggregated: {r.column}")
        return self.joins.expr(r), r.leaf

    def _type_error(self, fld: Field, lit: _Lit) -> ApiError:
        if fld.type in TEXT_TYPES:
            text = (f"value of filter criterion for field '{fld.name}' must be of type string "
                    f"and should be enclosed in quotes")
        else:
            text = (f"value of filter criterion for field '{fld.name}' must be of type "
                    f"{_TYPE_NAMES.get(fld.type, fld.type)} and should not be enclosed in quotes")
        return ApiError(400, "INVALID_QUERY_FILTER_OPERATOR",
                        _position_header(self.ctx.soql, lit.pos) + text)

    def coerce(self, fld: Field, lit: _Lit):
        """Stored form of a literal for ``fld``; ('range', start, end) for relative dates."""
        t = fld.type
        k = lit.kind
        if k == "null":
            return None
        if t in ID_TYPES:
            if k != "str":
                raise self._type_error(fld, lit)
            text = lit.value
            if len(text) == 18:          # the checksum suffix is case-insensitive
                text = text[:15] + text[15:].upper()
            try:
                return normalize_id(text)
            except ApiError:
                raise ApiError(400, "INVALID_QUERY_FILTER_OPERATOR",
                               f"invalid ID field: {lit.value}") from None
        if t == "boolean":
            if k != "bool":
                raise self._type_error(fld, lit)
            return int(lit.value)
        if t in INT_TYPES or t in REAL_TYPES:
            if k != "num":
                raise self._type_error(fld, lit)
            return lit.value
        if t in ("date", "datetime"):
            if k == "rel":
                start, end = _date_range(*lit.value, self.ctx.now)
                if t == "date":
                    end_date = (end - timedelta(microseconds=1)).date() + timedelta(days=1)
                    return ("range", start.date().isoformat(), end_date.isoformat())
                return ("range", start.strftime("%Y-%m-%dT%H:%M:%S"),
                        end.strftime("%Y-%m-%dT%H:%M:%S"))
            if t == "date" and k == "date":
                return lit.value
            if t == "datetime" and k == "datetime":
                return lit.value          # (stored text, has a fractional part)
            raise self._type_error(fld, lit)
        if t in TEXT_TYPES:
            if k != "str":
                raise self._type_error(fld, lit)
            return lit.value
        if k in ("str", "num"):
            return lit.value
        raise self._type_error(fld, lit)

    def comparison(self, cond: _Cond, expr: str, fld: Field, neg: bool) -> str:
        op = {"<>": "!="}.get(cond.op, cond.op)
        value = self.coerce(fld, cond.value)
        if value is None:
            if op not in ("=", "!="):
                raise self.ctx.malformed(cond.value.pos,
                                         f"unexpected token: {cond.value.text}")
            is_null = (op == "=") != neg
            return f"{expr} IS NULL" if is_null else f"{expr} IS NOT NULL"
        if isinstance(value, tuple) and value[0] == "range":
            _, start, end = value
            if op in ("=", "!="):
                self.params += [start, end]
                return self._leaf(expr, f"({expr} >= ? AND {expr} < ?)", op == "=", neg)
            bound, sql_op = {"<": (start, "<"), "<=": (end, "<"),
                             ">": (end, ">="), ">=": (start, ">=")}[op]
            self.params.append(bound)
            return self._leaf(expr, f"{expr} {sql_op} ?", True, neg)
        if isinstance(value, tuple):           # datetime literal: (stored, fractional)
            stored, fractional = value
            if fractional:
                if op in ("=", "!="):
                    stored += ".5"             # never equal to a whole-second stored value
                elif op in (">", ">="):
                    nxt = datetime.strptime(stored, "%Y-%m-%dT%H:%M:%S") + timedelta(seconds=1)
                    stored, op = nxt.strftime("%Y-%m-%dT%H:%M:%S"), ">="
                else:
                    op = "<="
            value = stored
        self.params.append(value)
        if op == "=":
            return self._leaf(expr, f"{expr} = ?", True, neg)
        if op == "!=":
            return self._leaf(expr, f"{expr} = ?", False, neg)
        return self._leaf(expr, f"{expr} {op} ?", True, neg)

    def in_list(self, cond: _Cond, expr: str, fld: Field, neg: bool) -> str:
        if isinstance(cond.value, _Query):
            if fld.type not in ID_TYPES:
                raise ApiError(400, "INVALID_FIELD", _position_header(self.ctx.soql, cond.pos) +
                               "The left operand of a semi join must be an ID or reference field")
            sub_sql = _semi_join(self.ctx, cond.value, self.params)
            return self._leaf(expr, f"{expr} IN ({sub_sql})", not cond.negate, neg)
        values = []
        has_null = False
        for lit in cond.value:
            v = self.coerce(fld, lit)
            if v is None:
                has_null = True
            elif isinstance(v, tuple) and v[0] == "range":
                raise self.ctx.malformed(lit.pos, f"unexpected token: {lit.text}")
            else:
                values.append(v[0] if isinstance(v, tuple) else v)
        self.params.extend(values)
        q = f"{expr} IN ({', '.join('?' * len(values))})" if values else "0"
        if has_null:
            q = f"({expr} IS NULL OR {q})"
            return f"NOT {q}" if cond.negate != neg else q
        return self._leaf(expr, q, not cond.negate, neg)


def _semi_join(ctx: _Ctx, sub: _Query, params: list) -> str:
    obj = ctx.schema.get(sub.obj_name)
    if obj is None:
        raise ApiError(400, "INVALID_TYPE", _position_header(ctx.soql, sub.obj_pos) +
                       _NO_SUCH_TYPE.format(name=sub.obj_name))
    if len(sub.items) != 1 or sub.items[0].kind != "field" or sub.items[0].alias:
        raise ctx.malformed(sub.pos, "The selected field in a semi join subquery must be a single "
                                     "ID or reference field")
    if sub.group_by or sub.having or sub.offset is not None:
        raise ctx.malformed(sub.pos, "Semi join subqueries do not support GROUP BY, HAVING or "
                                     "OFFSET")
    base = ctx.new_alias()
    joins = _Joins(ctx, base)
    r = ctx.resolve(obj, sub.items[0].ref, sub.alias)
    if r.leaf.type not in ID_TYPES:
        raise ctx.malformed(sub.items[0].pos, "The selected field in a semi join subquery must "
                                              "be an ID or reference field")
    col = joins.expr(r)
    where = _Where(ctx, obj, joins, sub.alias)
    conds = [f"{col} IS NOT NULL"]
    if not ctx.include_deleted:
        conds += _not_deleted(obj, base)
    if sub.where is not None:
        conds.append(where.compile(sub.where))
    order = ""
    if sub.limit is not None:
        order = " LIMIT ?"
        where.params.append(sub.limit)
    sql = (f"SELECT {col} FROM {quote(obj.name)} {base} {joins.sql()} "
           f"WHERE {' AND '.join(conds)}{order}")
    params.extend(where.params)
    return sql


def _aggregate_expr(ctx: _Ctx, obj: SObject, joins: _Joins, func: _Func,
                    alias: str | None) -> tuple[str, Field]:
    if func.arg is None:
        return "count(*)", Field("expr", "int")
    r = ctx.resolve(obj, func.arg, alias)
    expr = joins.expr(r)
    name = func.name
    f = r.leaf
    if name == "COUNT":
        return f"count({expr})", Field(f.name, "int")
    if name == "COUNT_DISTINCT":
        return f"count(DISTINCT {expr})", Field(f.name, "int")
    if name in ("SUM", "AVG"):
        if f.type not in INT_TYPES and f.type not in REAL_TYPES:
            raise ctx.malformed(func.pos, f"field {f.name} does not support aggregate operator "
                                          f"{name}")
        if name == "SUM":
            return f"sum({expr})", Field(f.name, f.type if f.type in INT_TYPES else "double")
        return f"avg({expr})", Field(f.name, "double")
    if f.type in ("boolean", "textarea"):
        raise ctx.malformed(func.pos, f"field {f.name} does not support aggregate operator {name}")
    return f"{name.lower()}({expr})", f


# --------------------------------------------------------------------------------------------
# select list → SQL columns and a record builder

class _Rel:
    """A parent relationship in the output tree."""

    def __init__(self, key: str, obj: SObject | None, poly: Field | None):
        self.key = key
        self.obj = obj
        self.poly = poly
        self.id_idx = -1          # non-poly: row index of the parent's Id
        self.fk_idx = -1          # poly: row index of the lookup value
        self.entries: list = []   # ('f', key, idx, conv) | ('r', _Rel)
        self.children: dict[str, _Rel] = {}
        self.poly_fields: list[Field] = []   # poly: Name fields, in select order


def _json_conv(f: Field):
    t = f.type
    if t in TEXT_TYPES or t in ID_TYPES or t == "date":
        return None
    return functools.partial(to_json, f)


_ADDRESS_KEYS = {"Street": "street", "City": "city", "State": "state",
                 "PostalCode": "postalCode", "Country": "country", "Latitude": "latitude",
                 "Longitude": "longitude", "GeocodeAccuracy": "geocodeAccuracy"}


def _compound_sql(obj: SObject, compound: Field, alias: str) -> str:
    """A compound field's value, built from its components: an object, or null when every
    component is null (as REST returns it)."""
    prefix = compound.name[:-len("Address")] if compound.type == "address" else ""
    pairs = []
    for part in obj.components(compound.name):
        if compound.type == "address":
            key = _ADDRESS_KEYS[part.name[len(prefix):]]
        else:  # location: X__Latitude__s / X__Longitude__s
            key = "latitude" if "Latitude" in part.name else "longitude"
        pairs.append((key, f"{alias}.{quote(part.name)}"))
    pairs.sort()
    values = ", ".join(expr for _, expr in pairs)
    body = ", ".join(f"'{key}', {expr}" for key, expr in pairs)
    return f"CASE WHEN COALESCE({values}) IS NULL THEN NULL ELSE json_object({body}) END"


def _compound_json(raw):
    return None if raw is None else json.loads(raw)


@dataclass
class _Child:
    key: str
    plan: _Plan
    fk: Field
    where_sql: str
    where_params: list
    order_sql: str
    order_params: list
    limit: int | None
    offset: int | None


class _Plan:
    """Select list of one object: SQL columns and how to turn rows into records/CSV cells."""

    def __init__(self, ctx: _Ctx, obj: SObject, base: str, alias: str | None):
        self.ctx = ctx
        self.obj = obj
        self.base = base
        self.alias = alias
        self.joins = _Joins(ctx, base)
        self.exprs = [f"{base}.rowid", f"{base}.\"Id\""]
        self.root = _Rel(obj.name, obj, None)
        self.root.id_idx = 1
        self.columns: list[str] = []
        self.csv_getters: list[tuple] = []
        self.childs: list[_Child] = []
        self._seen: set[str] = set()

    def _add_expr(self, expr: str) -> int:
        self.exprs.append(expr)
        return len(self.exprs) - 1

    def _dup(self, name: str, pos: int) -> None:
        low = name.lower()
        if low in self._seen:
            raise ApiError(400, "MALFORMED_QUERY", f"duplicate field selected: {name}")
        self._seen.add(low)

    def add_field(self, ref: _PathRef, key: str | None = None) -> None:
        r = self.ctx.resolve(self.obj, ref, self.alias)
        column = r.column
        self._dup(column, ref.pos)
        self.columns.append(column)
        node = self.root
        for i, name in enumerate(r.rel_names):
            child = node.children.get(name.lower())
            if child is None:
                if i < len(r.steps):
                    child = _Rel(name, r.steps[i][1], None)
                    alias = self.joins.alias_for(r.steps[:i + 1])
                    child.id_idx = self._add_expr(f"{alias}.\"Id\"")
                else:
                    child = _Rel(name, None, r.poly)
                    alias = self.joins.alias_for(r.steps)
                    child.fk_idx = self._add_expr(f"{alias}.{quote(r.poly.name)}")
                node.children[name.lower()] = child
                node.entries.append(("r", child))
            node = child
        if node.poly is not None:
            node.poly_fields.append(r.leaf)
            self.csv_getters.append(("p", node, r.leaf.name))
            return
        alias = self.joins.alias_for(r.steps)
        if r.leaf.type in COMPOUND_TYPES:
            if self.ctx.bulk:
                raise ApiError(400, "FUNCTIONALITY_NOT_ENABLED",
                               "Selecting compound data not supported in Bulk Query")
            owner = r.steps[-1][1] if r.steps else self.obj
            idx = self._add_expr(_compound_sql(owner, r.leaf, alias))
            node.entries.append(("f", key or r.leaf.name, idx, _compound_json))
            return
        idx = self._add_expr(f"{alias}.{quote(r.leaf.name)}")
        node.entries.append(("f", key or r.leaf.name, idx, _json_conv(r.leaf)))
        self.csv_getters.append(("f", node.id_idx, idx, r.leaf))

    def add_fields(self, kind: str, pos: int) -> None:
        for f in self.obj.visible_fields():
            if kind == "ALL" or (kind == "CUSTOM") == f.custom:
                self.add_field(_PathRef([f.name], pos))

    def add_child(self, item: _Item) -> None:
        sub = item.sub
        rels = [r for r in self.ctx.schema.child_relationships(self.obj.name)
                if r["relationshipName"].lower() == sub.obj_name.lower()]
        if not rels:
            raise ApiError(400, "INVALID_TYPE", _position_header(self.ctx.soql, sub.obj_pos) +
                           _BAD_CHILD_RELATIONSHIP.format(name=sub.obj_name))
        rel = rels[0]
        child_obj = self.ctx.schema.get(rel["childSObject"])
        fk = child_obj.fields[rel["field"]]
        key = rel["relationshipName"]
        self._dup(key, sub.obj_pos)
        self.columns.append(key)
        base = self.ctx.new_alias()
        plan = _Plan(self.ctx, child_obj, base, sub.alias)
        for it in sub.items:
            if it.kind == "field":
                if it.alias:
                    raise self.ctx.malformed(it.pos, f"unexpected token: {it.alias}")
                plan.add_field(it.ref)
            elif it.kind == "label":
                plan.add_field(it.ref, it.alias)
            elif it.kind == "fields":
                plan.add_fields(it.fields_kind, it.pos)
            else:
                raise self.ctx.malformed(it.pos, "Nested queries support only plain fields")
        if sub.group_by or sub.having:
            raise self.ctx.malformed(sub.pos, "Nested queries do not support GROUP BY or HAVING")
        where_sql, where_params = "", []
        if sub.where is not None:
            w = _Where(self.ctx, child_obj, plan.joins, sub.alias)
            where_sql = " AND " + w.compile(sub.where)
            where_params = w.params
        order_sql, order_params = _order_sql(self.ctx, child_obj, plan.joins, sub.order_by,
                                             sub.alias, base)
        self.childs.append(_Child(key, plan, fk, where_sql, where_params, order_sql,
                                  order_params, sub.limit, sub.offset))
        self.root.entries.append(("c", key, len(self.childs) - 1, None))
        self.csv_getters.append(("c",))

    # -- execution

    def fetch(self, db: sqlite3.Connection, rowids: list[int]) -> list[tuple]:
        if not rowids:
            return []
        sql = (f"SELECT {', '.join(self.exprs)} FROM {quote(self.obj.name)} {self.base} "
               f"{self.joins.sql()} WHERE {self.base}.rowid IN (SELECT value FROM json_each(?))")
        rows = db.execute(sql, (json.dumps(rowids),)).fetchall()
        by_rowid = {row[0]: row for row in rows}
        return [by_rowid[r] for r in rowids if r in by_rowid]

    def _poly_maps(self, db: sqlite3.Connection, rows: list[tuple]) -> dict:
        """For each polymorphic node: id -> (real object name, {field: (Field, raw)})."""
        maps: dict[int, dict] = {}
        stack = [self.root]
        while stack:
            node = stack.pop()
            for entry in node.entries:
                if entry[0] != "r":
                    continue
                rel = entry[1]
                if rel.poly is None:
                    stack.append(rel)
                    continue
                ids = {row[rel.fk_idx] for row in rows if row[rel.fk_idx] is not None}
                maps[id(rel)] = self._resolve_poly(db, rel, ids)
        return maps

    def _resolve_poly(self, db, rel: _Rel, ids: set[str]) -> dict:
        out: dict[str, tuple[str, dict]] = {}
        by_prefix: dict[str, list[str]] = {}
        for rid in ids:
            by_prefix.setdefault(rid[:3], []).append(rid)
        wanted = [f.name for f in rel.poly_fields if f.name not in ("Id", "Type")]
        for prefix, group in by_prefix.items():
            obj = self.ctx.schema.object_for_id(group[0])
            if obj is None:
                name = _EXTRA_NAMES.get(prefix, "Name")
                for rid in group:
                    out[rid] = (name, {})
                continue
            cols = [obj.field(n) for n in wanted]
            cols = [f for f in cols if f is not None]
            sql = (f"SELECT \"Id\"{''.join(', ' + quote(f.name) for f in cols)} "
                   f"FROM {quote(obj.name)} WHERE \"Id\" IN (SELECT value FROM json_each(?))")
            found = set()
            for row in db.execute(sql, (json.dumps(group),)):
                found.add(row[0])
                out[row[0]] = (obj.name, {f.name: (f, row[i + 1]) for i, f in enumerate(cols)})
            for rid in group:
                if rid not in found:
                    out[rid] = (obj.name, {})
        return out

    def _children(self, db, rows: list[tuple]) -> list[dict]:
        """For each child subquery: parent Id -> list of child rows (already ordered/limited)."""
        out = []
        parent_ids = json.dumps([row[1] for row in rows])
        for ch in self.childs:
            plan = ch.plan
            base = plan.base
            conds = [f"{base}.{quote(ch.fk.name)} IN (SELECT value FROM json_each(?))"]
            if not self.ctx.include_deleted:
                conds += _not_deleted(plan.obj, base)
            order = ch.order_sql or f"{base}.rowid"
            sql = (f"SELECT {', '.join(plan.exprs)}, {base}.{quote(ch.fk.name)} "
                   f"FROM {quote(plan.obj.name)} {base} {plan.joins.sql()} "
                   f"WHERE {' AND '.join(conds)}{ch.where_sql} ORDER BY {order}")
            groups: dict[str, list] = {}
            for row in db.execute(sql, [parent_ids, *ch.where_params, *ch.order_params]):
                groups.setdefault(row[-1], []).append(row)
            if ch.offset or ch.limit is not None:
                lo = ch.offset or 0
                hi = None if ch.limit is None else lo + ch.limit
                groups = {k: v[lo:hi] for k, v in groups.items()}
            out.append(groups)
        return out

    def render(self, db, rows: list[tuple], version: str) -> list[dict]:
        base_url = f"/services/data/v{version}/sobjects/"
        poly = self._poly_maps(db, rows)
        children = self._children(db, rows) if self.childs else []
        child_records = []
        for ch, groups in zip(self.childs, children, strict=True):
            rendered = {}
            for pid, crow in groups.items():
                recs = ch.plan.render(db, crow, version)
                rendered[pid] = {"totalSize": len(recs), "done": True, "records": recs}
            child_records.append(rendered)

        def build(node: _Rel, row: tuple, type_name: str, rid: str) -> dict:
            d = {"attributes": {"type": type_name, "url": f"{base_url}{node.obj.name}/{rid}"}}
            for entry in node.entries:
                kind = entry[0]
                if kind == "f":
                    v = row[entry[2]]
                    conv = entry[3]
                    d[entry[1]] = v if conv is None else conv(v)
                elif kind == "r":
                    rel = entry[1]
                    if rel.poly is None:
                        pid = row[rel.id_idx]
                        d[rel.key] = None if pid is None else build(rel, row, rel.obj.name, pid)
                    else:
                        d[rel.key] = build_poly(rel, row[rel.fk_idx])
                else:
                    d[entry[1]] = child_records[entry[2]].get(rid)
            return d

        def build_poly(rel: _Rel, rid: str | None):
            if rid is None:
                return None
            real, values = poly[id(rel)].get(rid, ("Name", {}))
            d = {"attributes": {"type": "Name", "url": f"{base_url}{real}/{rid}"}}
            for f in rel.poly_fields:
                if f.name == "Id":
                    d["Id"] = rid
                elif f.name == "Type":
                    d["Type"] = real
                else:
                    hit = values.get(f.name)
                    d[f.name] = None if hit is None else to_json(hit[0], hit[1])
            return d

        root = self.root
        name = self.obj.name
        return [build(root, row, name, row[1]) for row in rows]

    def csv(self, db, rows: list[tuple]) -> list[list[str]]:
        poly = self._poly_maps(db, rows)
        out = []
        getters = self.csv_getters
        for row in rows:
            cells = []
            for g in getters:
                if g[0] == "f":
                    _, id_idx, idx, f = g
                    cells.append("" if row[id_idx] is None else to_csv(f, row[idx]))
                elif g[0] == "p":
                    _, rel, name = g
                    rid = row[rel.fk_idx]
                    if rid is None:
                        cells.append("")
                        continue
                    real, values = poly[id(rel)].get(rid, ("Name", {}))
                    if name == "Id":
                        cells.append(rid)
                    elif name == "Type":
                        cells.append(real)
                    else:
                        hit = values.get(name)
                        cells.append("" if hit is None else to_csv(hit[0], hit[1]))
                else:
                    cells.append("")
            out.append(cells)
        return out


def _order_sql(ctx: _Ctx, obj: SObject, joins: _Joins, order_by: list[_Order],
               alias: str | None, base: str, aggregates=None) -> tuple[str, list]:
    parts = []
    for item in order_by:
        if isinstance(item.operand, _Func):
            if aggregates is None:
                raise ctx.malformed(item.operand.pos, f"unexpected token: {item.operand.name}")
            expr, _ = _aggregate_expr(ctx, obj, joins, item.operand, alias)
        else:
            r = ctx.resolve(obj, item.operand, alias)
            if aggregates is not None and r.column.lower() not in aggregates:
                raise ctx.malformed(item.operand.pos,
                                    f"Ordered field must be grouped or aggregated: {r.column}")
            expr = joins.expr(r)
        parts.append(f"{expr} {'DESC' if item.desc else 'ASC'} "
                     f"NULLS {'FIRST' if item.nulls_first else 'LAST'}")
    if aggregates is None:
        parts.append(f"{base}.rowid")
    return ", ".join(parts), []


# --------------------------------------------------------------------------------------------
# the prepared query

def _guard(method):
    """Never let an unexpected Python/SQLite exception escape as anything but MALFORMED_QUERY."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001 - the API must answer with a Salesforce error
            raise ApiError(400, "MALFORMED_QUERY", f"Unable to execute query: {exc}") from exc
    return wrapper


class Prepared:
    """A checked, compiled SOQL query. Cheap to keep; each method runs SQL on the given db."""

    sobject: SObject
    count_only: bool
    is_aggregate: bool
    columns: list[str]

    def __init__(self, ctx: _Ctx, q: _Query):
        self._ctx = ctx
        obj = ctx.schema.get(q.obj_name)
        if obj is None:
            raise ApiError(400, "INVALID_TYPE", _position_header(ctx.soql, q.obj_pos) +
                           _NO_SUCH_TYPE.format(name=q.obj_name))
        self.sobject = obj
        self._limit = q.limit
        self._offset = q.offset
        kinds = {it.kind for it in q.items}
        self.count_only = "count" in kinds
        self.is_aggregate = not self.count_only and ("agg" in kinds or bool(q.group_by))
        self._check(q, kinds)
        base = "t0"
        self._base = base
        if self.is_aggregate:
            self._compile_aggregate(q)
            return
        plan = _Plan(ctx, obj, base, q.alias)
        self._plan = plan
        if not self.count_only:
            for it in q.items:
                if it.kind == "field":
                    if it.alias:
                        raise ctx.malformed(it.pos + len(it.ref.text) + 1,
                                            f"unexpected token: {it.alias}")
                    plan.add_field(it.ref)
                elif it.kind == "label":
                    plan.add_field(it.ref, it.alias)
                elif it.kind == "fields":
                    plan.add_fields(it.fields_kind, it.pos)
                elif it.kind == "subquery":
                    plan.add_child(it)
        self.columns = plan.columns
        # WHERE / ORDER BY share one set of joins (separate from the select list's)
        joins = _Joins(ctx, base)
        conds = [] if ctx.include_deleted else _not_deleted(obj, base)
        params: list = []
        if q.where is not None:
            w = _Where(ctx, obj, joins, q.alias)
            conds.append(w.compile(q.where))
            params = w.params
        order, order_params = _order_sql(ctx, obj, joins, q.order_by, q.alias, base)
        from_sql = f"FROM {quote(obj.name)} {base} {joins.sql()}"
        where_sql = f" WHERE {' AND '.join(conds)}" if conds else ""
        self._count_sql = f"SELECT count(*) {from_sql}{where_sql}"
        self._count_params = list(params)
        page = ""
        page_params: list = []
        if q.limit is not None or q.offset is not None:
            page = " LIMIT ? OFFSET ?"
            page_params = [-1 if q.limit is None else q.limit, q.offset or 0]
        self._rowid_sql = f"SELECT {base}.rowid {from_sql}{where_sql} ORDER BY {order}{page}"
        self._rowid_params = [*params, *order_params, *page_params]

    def _check(self, q: _Query, kinds: set[str]) -> None:
        ctx = self._ctx
        if ctx.bulk:
            # Bulk API 2.0 rejects these at job creation. Code/texts are [unverified].
            unsupported = None
            if q.group_by:
                unsupported = "GROUP BY"
            elif q.offset is not None:
                unsupported = "OFFSET"
            elif "count" in kinds or "agg" in kinds:
                unsupported = "Aggregate functions and COUNT()"
            elif "fields" in kinds:
                unsupported = "The FIELDS() function"
            elif "subquery" in kinds:
                unsupported = "Parent-to-child relationship subqueries"
            if unsupported:
                raise ApiError(400, "INVALIDJOB",
                               f"{unsupported} is not supported by the Bulk API query")
        if self.count_only and (len(q.items) > 1 or q.group_by):
            raise ctx.malformed(q.items[1].pos if len(q.items) > 1 else q.pos,
                                "COUNT() must be the only element in the SELECT list")
        if q.offset is not None and q.offset > MAX_OFFSET:
            raise ApiError(400, "NUMBER_OUTSIDE_VALID_RANGE",
                           f"Maximum SOQL offset allowed is {MAX_OFFSET}")
        needs_limit = any(it.kind == "fields" and it.fields_kind in ("ALL", "CUSTOM")
                          for it in q.items)
        if needs_limit and (q.limit is None or q.limit > FIELDS_LIMIT):
            raise ApiError(400, "MALFORMED_QUERY",
                           "The SOQL FIELDS function must have a LIMIT of at most 200")
        if q.having is not None and not (self.is_aggregate):
            raise ctx.malformed(q.pos, "HAVING requires an aggregate query")

    # -- aggregates

    def _compile_aggregate(self, q: _Query) -> None:
        ctx, obj, base = self._ctx, self.sobject, self._base
        joins = _Joins(ctx, base)
        grouped: dict[str, str] = {}
        group_exprs = []
        for ref in q.group_by:
            r = ctx.resolve(obj, ref, q.alias)
            expr = joins.expr(r)
            grouped[r.column.lower()] = expr
            group_exprs.append(expr)
        self._agg_items: list[tuple[str, Field]] = []
        exprs = []
        seen = set()
        n = 0
        for it in q.items:
            if it.kind in ("fields", "subquery", "label"):
                raise ctx.malformed(it.pos, "Aggregate queries support only grouped fields and "
                                            "aggregate functions")
            if it.kind == "agg":
                expr, f = _aggregate_expr(ctx, obj, joins, it.func, q.alias)
                if it.alias:
                    key = it.alias
                else:
                    key = f"expr{n}"
                    n += 1
            else:
                r = ctx.resolve(obj, it.ref, q.alias)
                if r.column.lower() not in grouped:
                    raise ctx.malformed(it.pos, f"Field must be grouped or aggregated: {r.column}")
                expr, f = grouped[r.column.lower()], r.leaf
                key = it.alias or r.leaf.name
            if key.lower() in seen:
                raise ctx.malformed(it.pos, f"duplicate alias: {key}")
            seen.add(key.lower())
            exprs.append(expr)
            self._agg_items.append((key, f))
        self.columns = [k for k, _ in self._agg_items]
        conds = [] if ctx.include_deleted else _not_deleted(obj, base)
        params: list = []
        tail = ""
        if q.where is not None:
            w = _Where(ctx, obj, joins, q.alias)
            conds.append(w.compile(q.where))
            params += w.params
        if group_exprs:
            tail += f" GROUP BY {', '.join(group_exprs)}"
        if q.having is not None:
            w = _Where(ctx, obj, joins, q.alias, aggregates=grouped)
            tail += f" HAVING {w.compile(q.having)}"
            params += w.params
        if q.order_by:
            order, _ = _order_sql(ctx, obj, joins, q.order_by, q.alias, base, aggregates=grouped)
            tail += f" ORDER BY {order}"
        if q.limit is not None or q.offset is not None:
            tail += " LIMIT ? OFFSET ?"
            params += [-1 if q.limit is None else q.limit, q.offset or 0]
        # joins are complete only now (HAVING / ORDER BY may add some)
        where_sql = f" WHERE {' AND '.join(conds)}" if conds else ""
        self._agg_sql = (f"SELECT {', '.join(exprs)} FROM {quote(obj.name)} {base} "
                         f"{joins.sql()}{where_sql}{tail}")
        self._agg_params = params

    @_guard
    def aggregate_records(self, db: sqlite3.Connection) -> list[dict]:
        if not self.is_aggregate:
            return []
        out = []
        for row in db.execute(self._agg_sql, self._agg_params):
            rec = {"attributes": {"type": "AggregateResult"}}
            for (key, f), raw in zip(self._agg_items, row, strict=True):
                rec[key] = to_json(f, raw) if raw is not None else None
            out.append(rec)
        return out

    # -- plain queries

    @_guard
    def total(self, db: sqlite3.Connection) -> int:
        if self.is_aggregate:
            return len(self.aggregate_records(db))
        count = db.execute(self._count_sql, self._count_params).fetchone()[0]
        count = max(0, count - (self._offset or 0))
        if self._limit is not None:
            count = min(count, self._limit)
        return count

    @_guard
    def rowids(self, db: sqlite3.Connection) -> list[int]:
        if self.is_aggregate or self.count_only:
            return []
        cur = db.cursor()
        cur.row_factory = _first
        try:
            return cur.execute(self._rowid_sql, self._rowid_params).fetchall()
        finally:
            cur.close()

    @_guard
    def records(self, db: sqlite3.Connection, rowids: list[int], version: str) -> list[dict]:
        if self.is_aggregate or self.count_only:
            return []
        rows = self._plan.fetch(db, rowids)
        return self._plan.render(db, rows, version)

    @_guard
    def csv_rows(self, db: sqlite3.Connection, rowids: list[int]) -> list[list[str]]:
        if self.is_aggregate or self.count_only:
            return []
        rows = self._plan.fetch(db, rowids)
        return self._plan.csv(db, rows)


def _first(_cursor, row):
    return row[0]


def prepare(soql: str, schema: Schema, *, now: datetime, include_deleted: bool,
            bulk: bool = False) -> Prepared:
    """Parse and check ``soql``; raise ApiError exactly as Salesforce would answer."""
    try:
        if not isinstance(soql, str) or not soql.strip():
            raise ApiError(400, "MALFORMED_QUERY", "unexpected token: <EOF>")
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        query = _Parser(soql).parse()
        ctx = _Ctx(soql, schema, now, include_deleted, bulk)
        return Prepared(ctx, query)
    except ApiError:
        raise
    except RecursionError:
        raise ApiError(400, "MALFORMED_QUERY", "Query is too complex") from None
    except Exception as exc:  # noqa: BLE001 - never leak a Python error
        raise ApiError(400, "MALFORMED_QUERY", f"Unable to parse query: {exc}") from exc
