"""Sans-I/O QMP wire core: QEMU's JSON stream parser, request checks and output format.

Everything here mirrors what qemu-system-* 7.2 does on a QMP monitor, byte for byte;
the expected values in ``tests/test_proto_qmp.py`` were read off the real binary.

Input (``JsonStreamSplitter``) follows qobject/json-lexer.c, json-streamer.c and json-parser.c:

* QEMU's JSON extensions: 'single-quoted' strings, the ``\\'`` escape; modified UTF-8
  (``C0 80`` is U+0000); noncharacters, lone surrogates and overlong forms are rejected;
  integers outside int64/uint64 become floats; a top-level scalar is a message of its own.
* Message boundaries come from counting braces and brackets token by token; a message is
  parsed when they balance (or go negative), so ``{"a":1]`` fails once and ``]]`` gives two
  errors.
* After a lexical error the bytes up to the next structural character (``[]{},:``), ASCII
  control character other than TAB, or 0xFE/0xFF are skipped.  0xFF itself then draws an
  error ("stray '\\uFFFD'"), exactly as in QEMU.
* Limits: a message's tokens may not add up to more than *max_size* bytes (QEMU: 64 MiB,
  vmd: 1 MiB by default), at most 2 Mi tokens, nesting at most 1024.  Beyond that QEMU says
  "JSON token size limit exceeded" / "... count ..." / "JSON nesting depth limit exceeded"
  and resynchronises; so do we.  Memory per connection stays O(max_size).

Well-formed, ASCII, escape-free standard JSON objects take a fast path through the stdlib's
C scanner; anything it might read differently from QEMU goes through the exact slow path.

Output (``encode``) follows qobject/json-writer.c: ASCII only (``\\uXXXX`` with upper-case
hex, U+FFFD for what QEMU cannot represent), ``", "`` and ``": "`` separators, floats as
``%.17g``, members in QDict iteration order (hash buckets, qobject/qdict.c), CRLF at the end.

Request checks (``parse_request``) follow qapi/qmp-dispatch.c, including that the members
are checked in QDict order, so with several bad members the same one is reported.
"""

from __future__ import annotations

import array
import json
import math
import re
import sys

from vmd.errors import GenericError

TYPE_CHECKING = False
if TYPE_CHECKING:  # keep typing off the start-up path
    from typing import Any, Union

__all__ = [
    "ABSENT",
    "DEFAULT_MAX_SIZE",
    "DispatchError",
    "JsonStreamSplitter",
    "MAX_NESTING",
    "MAX_TOKEN_COUNT",
    "MAX_TOKEN_SIZE",
    "Message",
    "Request",
    "WireDict",
    "WireError",
    "encode",
    "err",
    "event",
    "greeting",
    "ok",
    "parse_request",
    "qdict_order",
]

#: QEMU's limits (qobject/json-streamer.c, json-lexer.c).
MAX_TOKEN_SIZE = 64 << 20
MAX_TOKEN_COUNT = 2 << 20
MAX_NESTING = 1 << 10
#: vmd's per-message cap on token bytes (QEMU's MAX_TOKEN_SIZE, made smaller).
DEFAULT_MAX_SIZE = 1 << 20
DEFAULT_MAX_COUNT = MAX_TOKEN_COUNT

PARSE_ERROR_PREFIX = "JSON parse error, "


class _Absent:
    """The id of a request that had none (``None`` is the JSON ``null`` id)."""

    _instance: "_Absent | None" = None

    def __new__(cls) -> "_Absent":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


class WireError(GenericError):
    """A message QEMU's JSON parser rejects; answered with ``err("GenericError", desc)``, no id."""

    def __repr__(self) -> str:
        return f"WireError({self.desc!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WireError) and other.desc == self.desc

    def __hash__(self) -> int:
        return hash(self.desc)


class Message:
    """One complete JSON value from the stream (any type: QEMU splits top-level scalars too)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"Message({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and _same(self.value, other.value)

    __hash__ = None  # type: ignore[assignment]


def _same(a: Any, b: Any) -> bool:
    """Equality that tells 1 from 1.0 and True, -0.0 from 0.0 and nan from nothing."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b and math.copysign(1, a) == math.copysign(1, b) or (a != a and b != b)
    if type(a) is dict:
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# --------------------------------------------------------------------------------------
# Unicode the QEMU way (util/unicode.c)

_MIN_CP = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)
_NONCHARS = re.compile(
    "[\ufdd0-\ufdef\ufffe\uffff"
    + "".join(chr((p << 16) | 0xFFFE) + chr((p << 16) | 0xFFFF) for p in range(1, 17))
    + "]"
)


def _valid_cp(cp: int) -> bool:
    return (
        0 <= cp <= 0x10FFFF
        and not 0xD800 <= cp <= 0xDFFF
        and not 0xFDD0 <= cp <= 0xFDEF
        and (cp & 0xFFFE) != 0xFFFE
    )


def _mod_utf8_codepoint(b: bytes, i: int, n: int) -> tuple[int, int]:
    """Decode the modified UTF-8 sequence at b[i] (b[n:] reads as NUL): (codepoint or -1, end)."""
    byte = b[i]
    if byte < 0x80:
        return byte, i + 1
    if byte >= 0xFE or not byte & 0x40:
        return -1, i + 1
    length = 0
    mask = 0x80
    while byte & mask:
        length += 1
        mask >>= 1
    cp = byte & (mask - 1)
    p = i + 1
    for _ in range(1, length):
        c = b[p] if p < n else 0
        if c & 0xC0 != 0x80:
            return -1, p
        p += 1
        cp = (cp << 6) | (c & 0x3F)
    if not _valid_cp(cp) or (cp < _MIN_CP[length - 2] and not (cp == 0 and length == 2)):
        return -1, p
    return cp, p


def _c_text(b: bytes) -> str:
    """What QEMU's JSON writer shows for the C string ``b``: cut at NUL, bad sequences → U+FFFD."""
    z = b.find(0)
    if z >= 0:
        b = b[:z]
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if not _NONCHARS.search(s):
            return s
    chars = []
    i, n = 0, len(b)
    while i < n:
        cp, i = _mod_utf8_codepoint(b, i, n)
        chars.append(chr(cp) if cp >= 0 else "\ufffd")
    return "".join(chars)


class _ParseError(Exception):
    pass


_BAD_UTF8 = "invalid UTF-8 sequence in string"


def _decode_plain(seg: bytes) -> str:
    """Decode string contents without escapes; raise like json-parser.c on bad input."""
    if seg.isascii():  # the lexer lets no control characters through
        return seg.decode("ascii")
    try:
        s = seg.decode("utf-8")
    except UnicodeDecodeError:
        chars = []
        i, n = 0, len(seg)
        while i < n:
            cp, i = _mod_utf8_codepoint(seg, i, n)
            if cp < 0:
                raise _ParseError(_BAD_UTF8) from None
            chars.append(chr(cp))
        return "".join(chars)
    if _NONCHARS.search(s):
        raise _ParseError(_BAD_UTF8)
    return s


_SIMPLE_ESCAPES = {
    0x22: '"', 0x27: "'", 0x5C: "\\", 0x2F: "/",
    0x62: "\b", 0x66: "\f", 0x6E: "\n", 0x72: "\r", 0x74: "\t",
}


def _cvt4hex(tok: bytes, p: int) -> int:
    cp = 0
    for k in range(p, p + 4):
        c = tok[k] if k < len(tok) else 0
        if 0x30 <= c <= 0x39:
            cp = (cp << 4) | (c - 0x30)
        elif 0x61 <= c <= 0x66:
            cp = (cp << 4) | (c - 0x57)
        elif 0x41 <= c <= 0x46:
            cp = (cp << 4) | (c - 0x37)
        else:
            return -1
    return cp


def _parse_string(tok: bytes) -> str:
    """A complete string token (with its quotes) to str, as json-parser.c parse_string()."""
    end = len(tok) - 1  # the closing quote
    if tok.find(b"\\", 1, end) < 0:
        return _decode_plain(tok[1:end])
    parts = []
    i = 1
    while True:
        j = tok.find(b"\\", i, end)
        if j < 0:
            parts.append(_decode_plain(tok[i:end]))
            return "".join(parts)
        if j > i:
            parts.append(_decode_plain(tok[i:j]))
        c = tok[j + 1]
        if c != 0x75:  # not \u
            ch = _SIMPLE_ESCAPES.get(c)
            if ch is None:
                raise _ParseError("invalid escape sequence in string")
            parts.append(ch)
            i = j + 2
            continue
        p = j + 2
        cp = _cvt4hex(tok, p)
        p += 4
        if 0xD800 <= cp <= 0xDBFF and tok[p : p + 2] == b"\\u":
            trailing = _cvt4hex(tok, p + 2)
            if 0xDC00 <= trailing <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) | (trailing & 0x3FF)
                p += 6
            else:
                cp = -1
        if not _valid_cp(cp):
            raise _ParseError(f"{_c_text(tok[j:p])} is not a valid Unicode character")
        parts.append(chr(cp))
        i = p


def _parse_scalar(tok: bytes) -> Any:
    c = tok[0]
    if c == 0x22 or c == 0x27:
        return _parse_string(tok)
    if 0x61 <= c <= 0x7A:
        if tok == b"true":
            return True
        if tok == b"false":
            return False
        if tok == b"null":
            return None
        # parse_error() formats into a 1024-byte buffer
        raise _ParseError(f"invalid keyword '{tok.decode('ascii')}'"[:1023])
    text = tok.decode("ascii")
    if b"." in tok or b"e" in tok or b"E" in tok:
        return float(text)
    return _qemu_int(text)


def _qemu_int(text: str) -> Any:
    """An integer token as a QNum: int64, else uint64, else double (strtod)."""
    if len(text) <= 20:  # longer ones are out of range (and int() may refuse them)
        v = int(text)
        if -(1 << 63) <= v < (1 << 64):
            return v
    return float(text)


# --------------------------------------------------------------------------------------
# The parser proper (json-parser.c), over a complete token list

_LCURLY, _RCURLY, _LSQUARE, _RSQUARE, _COMMA, _COLON = 1, 2, 3, 4, 5, 6
_PUNCT = {0x7B: _LCURLY, 0x7D: _RCURLY, 0x5B: _LSQUARE, 0x5D: _RSQUARE, 0x2C: _COMMA, 0x3A: _COLON}
_NOKEY = object()


def _parse_tokens(tokens: list) -> Any:
    """Parse one value from ``tokens`` (ints for punctuation, bytes otherwise); raise _ParseError.

    Iterative rendering of json-parser.c's recursive descent, reporting the same first error.
    """
    n = len(tokens)
    i = 0
    stack: list[list] = []  # [container, is_dict, pending key]
    while True:
        # parse_value()
        if i >= n:
            raise _ParseError("premature EOI")
        t = tokens[i]
        if t.__class__ is int:
            if t == _LCURLY or t == _LSQUARE:
                i += 1
                if i >= n:
                    raise _ParseError("premature EOI")
                if t == _LCURLY:
                    if tokens[i] == _RCURLY:
                        i += 1
                        v: Any = {}
                    else:
                        stack.append([{}, True, _NOKEY])
                        continue
                else:
                    if tokens[i] == _RSQUARE:
                        i += 1
                        v = []
                    else:
                        stack.append([[], False, None])
                        continue
            else:
                raise _ParseError("expecting value")
        else:
            i += 1
            v = _parse_scalar(t)
        # hand the value to the enclosing container(s)
        while True:
            if not stack:
                return v
            frame = stack[-1]
            if frame[1]:
                if frame[2] is _NOKEY:
                    if v.__class__ is not str:
                        raise _ParseError("key is not a string in object")
                    if i >= n:
                        raise _ParseError("premature EOI")
                    if tokens[i] != _COLON:
                        raise _ParseError("missing : in object pair")
                    i += 1
                    frame[2] = v
                    break
                d = frame[0]
                k = frame[2]
                if k in d:
                    raise _ParseError("duplicate key")
                d[k] = v
                frame[2] = _NOKEY
                if i >= n:
                    raise _ParseError("premature EOI")
                t = tokens[i]
                i += 1
                if t == _RCURLY:
                    stack.pop()
                    v = d
                    continue
                if t == _COMMA:
                    break
                raise _ParseError("expected separator in dict")
            lst = frame[0]
            lst.append(v)
            if i >= n:
                raise _ParseError("premature EOI")
            t = tokens[i]
            i += 1
            if t == _RSQUARE:
                stack.pop()
                v = lst
                continue
            if t == _COMMA:
                break
            raise _ParseError("expected separator in list")


# --------------------------------------------------------------------------------------
# The stream splitter (json-lexer.c + json-streamer.c)

# lexer states
(
    _START, _RECOVERY, _DQ, _DQ_ESC, _SQ, _SQ_ESC, _ZERO, _SIGN, _DIGITS,
    _MANTISSA, _MANTISSA_DIGITS, _EXP_E, _EXP_SIGN, _EXP_DIGITS, _KEYWORD,
) = range(15)

_WS_RUN = re.compile(rb"[ \t\r\n]*")
_DQ_RUN = re.compile(rb'[^"\\\x00-\x1f\xfe\xff]*')
_SQ_RUN = re.compile(rb"[^'\\\x00-\x1f\xfe\xff]*")
_DIGIT_RUN = re.compile(rb"[0-9]*")
_KEYWORD_RUN = re.compile(rb"[a-z]*")
# IN_RECOVERY skips all but structural characters, control characters other than TAB, 0xFE, 0xFF
_RECOVERY_RUN = re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{},:]*")
_WS = frozenset(b" \t\r\n")
_DIGITS_SET = frozenset(b"0123456789")



# Up to 3.11 the C scanner's recursion is bounded by sys.getrecursionlimit() (3.12 moved it
# to a separate C limit).
_SCANNER_DEPTH_BOUNDED = sys.version_info < (3, 12)
_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class _Reject(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _Reject(name)


def _unique_pairs(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _Reject("duplicate key")
    return d


# The fast path: the stdlib's C scanner, told to refuse what QEMU reads differently (NaN,
# Infinity, duplicate keys) and to type integers as QEMU does.  Strings with \u escapes
# and non-ASCII text are left to the slow path (surrogates, noncharacters, modified UTF-8).
_scan_once = json.scanner.make_scanner(  # type: ignore[attr-defined]
    json.JSONDecoder(object_pairs_hook=_unique_pairs, parse_constant=_reject_constant, parse_int=_qemu_int)
)


class _TokenBuffer:
    """The tokens of the message being collected, packed: a few bytes per token.

    A partial message may hold up to a million tiny tokens (``[nul,nul,...``); as a list of
    separate objects that costs about 16 times the input, packed about twice.
    Punctuation is stored as its code, text tokens in one shared byte buffer.
    """

    __slots__ = ("kinds", "ends", "text")

    def __init__(self) -> None:
        self.kinds = array.array("b")  # punctuation code, or 0 for a text token
        self.ends = array.array("I")  # end offset of each token's text
        self.text = bytearray()

    def __len__(self) -> int:
        return len(self.kinds)

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def append(self, tok: Any) -> None:
        if tok.__class__ is int:
            self.kinds.append(tok)
        else:
            self.kinds.append(0)
            self.text += tok
        self.ends.append(len(self.text))

    def tolist(self) -> list:
        out: list = []
        start = 0
        text = self.text
        for kind, end in zip(self.kinds, self.ends):
            if kind:
                out.append(kind)
            else:
                out.append(bytes(text[start:end]))
                start = end
        return out


class JsonStreamSplitter:
    """Split a QMP input byte stream into messages exactly as QEMU's JSON parser does.

    ``feed(data)`` returns, in order, a :class:`Message` per complete JSON value and a
    :class:`WireError` per rejected one (whose ``desc`` is QEMU's text).  State carries over
    between calls, so any split of the stream into chunks gives the same result.

    *max_size* plays QEMU's MAX_TOKEN_SIZE (64 MiB there): it bounds a single token and the
    token bytes of one message.  *max_count* and *max_nesting* are QEMU's values.  With
    ``fast=False`` every byte goes through the exact slow path (the tests compare both).
    """

    def __init__(
        self,
        max_size: int = DEFAULT_MAX_SIZE,
        *,
        max_count: int = DEFAULT_MAX_COUNT,
        max_nesting: int = MAX_NESTING,
        fast: bool = True,
    ):
        if max_size < 2:
            raise ValueError("max_size must be at least 2")
        self.max_size = max_size
        self.max_count = max_count
        self.max_nesting = max_nesting
        self.fast = fast
        # a message this short cannot reach the size or count limits
        self._fast_limit = min(max_size - 1, max_count)
        self.reset()

    def reset(self) -> None:
        """Forget any partial message (QEMU re-inits its parser when a client disconnects)."""
        self._state = _START
        self._tok = bytearray()
        self._tokens = _TokenBuffer()
        self._token_size = 0
        self._braces = 0
        self._brackets = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message (bounded by about 2 * max_size)."""
        return len(self._tok) + self._token_size

    # -- input -----------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Union[Message, WireError]]:
        out: list[Union[Message, WireError]] = []
        n = len(data)
        if not self.fast:
            self._slow(data, 0, n, out, False)
            return out
        i = 0
        text = None
        ascii_only = data.isascii()
        while i < n:
            if self._state == _START and not self._tokens:
                c = data[i]
                if c in _WS:
                    i = _WS_RUN.match(data, i).end()
                    continue
                if c == 0x7B or c == 0x5B:
                    if text is None:
                        text = data.decode("latin-1")  # one char per byte: indices agree
                    try:
                        value, end = _scan_once(text, i)
                    except (StopIteration, ValueError, RecursionError, _Reject):
                        pass
                    else:
                        length = end - i
                        if (
                            text.find("\\u", i, end) < 0
                            and length < self._fast_limit
                            and (ascii_only or text[i:end].isascii())
                            and (length <= 2 * self.max_nesting or self._depth_ok(text, i, end))
                        ):
                            out.append(Message(value))
                            i = end
                            continue
            i = self._slow(data, i, n, out, True)
        return out

    def _depth_ok(self, text: str, i: int, end: int) -> bool:
        """Whether the JSON text[i:end] nests at most max_nesting deep."""
        limit = self.max_nesting
        if _SCANNER_DEPTH_BOUNDED and sys.getrecursionlimit() <= limit:
            return True  # the C scanner cannot have gone deeper (it raises RecursionError)
        if text.count("[", i, end) + text.count("{", i, end) <= limit:
            return True
        depth = 0
        for m in _BRACKETS.finditer(text, i, end):
            c = m.group()
            if c == "[" or c == "{":
                depth += 1
                if depth > limit:
                    return False
            elif c == "]" or c == "}":
                depth -= 1
        return True

    # -- streamer --------------------------------------------------------------------
    def _reset_message(self) -> None:
        self._tokens = _TokenBuffer()
        self._token_size = 0
        self._braces = 0
        self._brackets = 0

    def _error(self, desc: str, out: list) -> None:
        self._reset_message()
        out.append(WireError(desc))

    def _stray(self, tok: bytes, out: list) -> None:
        self._error(f"JSON parse error, stray '{_c_text(bytes(tok))}'", out)
        self._tok = bytearray()
        self._state = _RECOVERY

    def _oversize(self, out: list) -> None:
        # json-lexer.c hands the over-long partial token on; the streamer refuses it
        self._error("JSON token size limit exceeded", out)
        self._tok = bytearray()
        self._state = _START

    def _push(self, tok: Any, size: int, out: list) -> None:
        """json_message_process_token() for a complete token."""
        if tok.__class__ is int:
            if tok == _LCURLY:
                self._braces += 1
            elif tok == _RCURLY:
                self._braces -= 1
            elif tok == _LSQUARE:
                self._brackets += 1
            elif tok == _RSQUARE:
                self._brackets -= 1
        if self._token_size + size + 1 > self.max_size:
            return self._error("JSON token size limit exceeded", out)
        if len(self._tokens) + 1 > self.max_count:
            return self._error("JSON token count limit exceeded", out)
        if self._braces + self._brackets > self.max_nesting:
            return self._error("JSON nesting depth limit exceeded", out)
        self._tokens.append(tok)
        self._token_size += size
        braces, brackets = self._braces, self._brackets
        if (braces > 0 or brackets > 0) and braces >= 0 and brackets >= 0:
            return None
        tokens = self._tokens
        self._reset_message()
        try:
            out.append(Message(_parse_tokens(tokens.tolist())))
        except _ParseError as e:
            out.append(WireError(PARSE_ERROR_PREFIX + str(e)))
        return None

    def _emit(self, out: list) -> None:
        tok = bytes(self._tok)
        self._tok = bytearray()
        self._state = _START
        self._push(tok, len(tok), out)

    def _run(self, regex: "re.Pattern[bytes]", data: bytes, i: int, out: list) -> int:
        """Append a run of ``regex`` to the token and return where it ended.

        If the token grew beyond max_size on the way (json-lexer.c checks after every
        character), it is refused and ``-(position) - 1`` is returned instead.
        """
        j = regex.match(data, i).end()
        room = self.max_size + 1 - len(self._tok)
        if j - i >= room:
            self._tok += data[i : i + room]
            self._oversize(out)
            return -(i + room) - 1
        self._tok += data[i:j]
        return j

    # -- lexer -----------------------------------------------------------------------
    def _slow(self, data: bytes, i: int, n: int, out: list, stop_when_idle: bool) -> int:
        """Run the byte-exact lexer from data[i]; return where it stopped.

        With *stop_when_idle* it returns as soon as it is between messages again (after
        consuming something), so that ``feed`` can try the fast path.
        """
        start = i
        max_size = self.max_size
        while i < n:
            st = self._state
            if st == _START:
                if stop_when_idle and i > start and not self._tokens:
                    return i
                c = data[i]
                if c in _WS:
                    i = _WS_RUN.match(data, i).end()
                    continue
                p = _PUNCT.get(c)
                if p is not None:
                    i += 1
                    self._push(p, 1, out)
                    continue
                i += 1
                self._tok.append(c)
                if c == 0x22:
                    self._state = _DQ
                elif c == 0x27:
                    self._state = _SQ
                elif c == 0x30:
                    self._state = _ZERO
                elif 0x31 <= c <= 0x39:
                    self._state = _DIGITS
                elif c == 0x2D:
                    self._state = _SIGN
                elif 0x61 <= c <= 0x7A:
                    self._state = _KEYWORD
                else:
                    self._stray(self._tok, out)
                continue
            if st == _RECOVERY:
                i = _RECOVERY_RUN.match(data, i).end()
                if i < n:
                    self._state = _START  # the stop character is looked at again
                continue
            if st == _DQ or st == _SQ:
                j = self._run(_DQ_RUN if st == _DQ else _SQ_RUN, data, i, out)
                if j < 0:
                    i = -j - 1
                    continue
                i = j
                if i >= n:
                    break
                c = data[i]
                i += 1
                self._tok.append(c)
                if c == (0x22 if st == _DQ else 0x27):
                    self._emit(out)
                elif c == 0x5C:
                    self._state = _DQ_ESC if st == _DQ else _SQ_ESC
                    if len(self._tok) > max_size:
                        self._oversize(out)
                else:
                    self._stray(self._tok, out)
                continue
            c = data[i]
            if st == _DQ_ESC or st == _SQ_ESC:
                i += 1
                self._tok.append(c)
                if 0x20 <= c <= 0xFD:
                    self._state = _DQ if st == _DQ_ESC else _SQ
                    if len(self._tok) > max_size:
                        self._oversize(out)
                else:
                    self._stray(self._tok, out)
                continue
            if st == _DIGITS or st == _MANTISSA_DIGITS or st == _EXP_DIGITS or st == _KEYWORD:
                j = self._run(_KEYWORD_RUN if st == _KEYWORD else _DIGIT_RUN, data, i, out)
                if j < 0:
                    i = -j - 1
                    continue
                i = j
                if i >= n:
                    break
                c = data[i]
                if st != _KEYWORD and st != _EXP_DIGITS and (c == 0x65 or c == 0x45):
                    self._state = _EXP_E
                elif st == _DIGITS and c == 0x2E:
                    self._state = _MANTISSA
                else:
                    self._emit(out)  # lookahead: c is looked at again in _START
                    continue
                i += 1
                self._tok.append(c)
                if len(self._tok) > max_size:
                    self._oversize(out)
                continue
            if st == _ZERO:
                if c == 0x2E:
                    self._state = _MANTISSA
                elif c in _DIGITS_SET:
                    i += 1
                    self._tok.append(c)
                    self._stray(self._tok, out)
                    continue
                else:
                    self._emit(out)
                    continue
            elif st == _SIGN:
                if c == 0x30:
                    self._state = _ZERO
                elif 0x31 <= c <= 0x39:
                    self._state = _DIGITS
                else:
                    st = -1
            elif st == _MANTISSA:
                if c in _DIGITS_SET:
                    self._state = _MANTISSA_DIGITS
                else:
                    st = -1
            elif st == _EXP_E:
                if c == 0x2B or c == 0x2D:
                    self._state = _EXP_SIGN
                elif c in _DIGITS_SET:
                    self._state = _EXP_DIGITS
                else:
                    st = -1
            elif st == _EXP_SIGN:
                if c in _DIGITS_SET:
                    self._state = _EXP_DIGITS
                else:
                    st = -1
            i += 1
            self._tok.append(c)
            if st == -1:
                self._stray(self._tok, out)
            elif len(self._tok) > max_size:
                self._oversize(out)
        return i


# --------------------------------------------------------------------------------------
# Requests (qapi/qmp-dispatch.c)


class Request:
    """A command that passed qmp-dispatch's checks.  ``id`` is :data:`ABSENT` when not given."""

    __slots__ = ("name", "arguments", "id", "oob")

    def __init__(self, name: str, arguments: dict, id: Any = ABSENT, oob: bool = False):
        self.name = name
        self.arguments = arguments
        self.id = id
        self.oob = oob

    def __repr__(self) -> str:
        return f"Request({self.name!r}, {self.arguments!r}, id={self.id!r}, oob={self.oob})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Request)
            and (self.name, self.oob) == (other.name, other.oob)
            and _same(self.arguments, other.arguments)
            and (self.id is other.id or _same(self.id, other.id))
        )

    __hash__ = None  # type: ignore[assignment]


class DispatchError(GenericError):
    """A request qmp-dispatch refuses before looking up the command; ``id`` is echoed."""

    def __init__(self, desc: str, id: Any = ABSENT):
        super().__init__(desc)
        self.id = id

    def __repr__(self) -> str:
        return f"DispatchError({self.desc!r}, id={self.id!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DispatchError)
            and other.desc == self.desc
            and (self.id is other.id or _same(self.id, other.id))
        )

    __hash__ = None  # type: ignore[assignment]


def parse_request(obj: Any, oob_enabled: bool = False) -> Union[Request, DispatchError]:
    """Check a parsed message the way qmp_dispatch() does, in QEMU's order.

    Members are examined in QDict iteration order, so when several are wrong the one QEMU
    reports is reported.  ``exec-oob`` is a member like any other unless OOB was negotiated.
    """
    if not isinstance(obj, dict):
        return DispatchError("QMP input must be a JSON object")
    rid = obj.get("id", ABSENT)
    exec_key = None
    for key in _order(tuple(obj)):
        if key == "execute" or (key == "exec-oob" and oob_enabled):
            if not isinstance(obj[key], str):
                return DispatchError(f"QMP input member '{key}' must be a string", rid)
            if exec_key is not None:
                return DispatchError(f"QMP input member '{key}' clashes with '{exec_key}'", rid)
            exec_key = key
        elif key == "arguments":
            if not isinstance(obj[key], dict):
                return DispatchError("QMP input member 'arguments' must be an object", rid)
        elif key != "id":
            return DispatchError(f"QMP input member '{key}' is unexpected", rid)
    if exec_key is None:
        return DispatchError("QMP input lacks member 'execute'", rid)
    args = obj.get("arguments")
    return Request(obj[exec_key], {} if args is None else args, rid, exec_key == "exec-oob")


# --------------------------------------------------------------------------------------
# QDict member order (qobject/qdict.c): 512 hash buckets, newest entry first in a bucket

_BUCKETS = 512
# caches for the key sets vmd and its clients use over and over; bounded in count, and
# long (client-made) keys are not kept
_bucket_cache: dict[str, int] = {}
_order_cache: dict[tuple, tuple] = {}
_CACHE_MAX = 4096
_CACHE_KEY_LEN = 64


def _bucket(key: str) -> int:
    """tdb_hash(key) % 512 over the key's modified UTF-8."""
    b = _bucket_cache.get(key)
    if b is not None:
        return b
    raw = key.encode("utf-8", "surrogatepass").replace(b"\x00", b"\xc0\x80")
    value = 0x238F13AF * len(raw)
    if len(raw) <= 48:
        for i, c in enumerate(raw):
            value += c << (i * 5 % 24)
    else:  # byte i is shifted by (5 * i) % 24, which repeats every 24 bytes
        for r in range(24):
            value += sum(raw[r::24]) << (r * 5 % 24)
    b = ((1103515243 * (value & 0xFFFFFFFF) + 12345) & 0xFFFFFFFF) % _BUCKETS
    if len(key) <= _CACHE_KEY_LEN:
        if len(_bucket_cache) >= _CACHE_MAX:
            _bucket_cache.clear()
        _bucket_cache[key] = b
    return b


def _order(keys: tuple) -> tuple:
    """QDict iteration order for keys inserted in the order given."""
    if len(keys) < 2:
        return keys
    order = _order_cache.get(keys)
    if order is None:
        ranked = sorted(range(len(keys)), key=lambda i: (_bucket(keys[i]), -i))
        order = tuple(keys[i] for i in ranked)
        if len(keys) <= 32 and all(len(k) <= _CACHE_KEY_LEN for k in keys):
            if len(_order_cache) >= _CACHE_MAX:
                _order_cache.clear()
            _order_cache[keys] = order
    return order


class WireDict(dict):
    """A dict already in wire order: :func:`encode` writes its members as they come.

    A plain ``dict`` is taken to hold its members in the order QEMU would have inserted
    them (for command results: QAPI schema order) and is written in QDict order.
    """

    __slots__ = ()


def qdict_order(obj: Any) -> Any:
    """A copy of ``obj`` with every dict a :class:`WireDict` in the order QEMU writes it."""
    if type(obj) is WireDict:
        return WireDict((k, qdict_order(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return WireDict((k, qdict_order(obj[k])) for k in _order(tuple(obj)))
    if isinstance(obj, (list, tuple)):
        return [qdict_order(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------
# Output (qobject/json-writer.c)

try:
    from json.encoder import c_encode_basestring_ascii as _ascii  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - CPython always has the C accelerator
    _ascii = None
if _ascii is None:  # pragma: no cover
    from json.encoder import py_encode_basestring_ascii as _ascii  # type: ignore[attr-defined]

_ESCAPE_FIX = re.compile(r"\\\\|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})")


def _fix_escape(m: "re.Match[str]") -> str:
    hi, lo, single = m.group(1), m.group(2), m.group(3)
    if single is not None:
        cp = int(single, 16)
        return "\\u" + single.upper() if _valid_cp(cp) else "\\uFFFD"
    if hi is not None:
        cp = 0x10000 + ((int(hi, 16) - 0xD800) << 10) + (int(lo, 16) - 0xDC00)
        return "\\u" + hi.upper() + "\\u" + lo.upper() if _valid_cp(cp) else "\\uFFFD"
    return m.group(0)


def _qstr(s: str) -> str:
    r = _ascii(s)
    if "\\u" in r:
        r = _ESCAPE_FIX.sub(_fix_escape, r)
    return r


def _qfloat(v: float) -> str:
    if v != v:
        return "-nan" if math.copysign(1.0, v) < 0 else "nan"
    return "%.17g" % v


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return _qstr(v)
    if isinstance(v, int):
        if -(1 << 63) <= v < (1 << 64):
            return int.__repr__(v)
        return _qfloat(float(v))  # a QNum can only hold it as a double
    if isinstance(v, float):
        return _qfloat(v)
    raise TypeError(f"Object of type {type(v).__name__} is not QMP serializable")


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if k is None or isinstance(k, (bool, int, float)):
        return _scalar(k)
    raise TypeError(f"keys must be str, not {type(k).__name__}")


def _dump(obj: Any, pretty: bool) -> str:
    """json-writer.c, iteratively (QMP allows 1024 levels of nesting)."""
    out: list[str] = []
    w = out.append
    stack: list[tuple[Any, bool]] = []
    it: Any = iter(((None, obj),))
    need_comma = False
    while True:
        for name, v in it:
            if need_comma:
                w(",\n" + "    " * len(stack) if pretty else ", ")
            else:
                if pretty and out:
                    w("\n" + "    " * len(stack))
                need_comma = True
            if name is not None:
                w(_qstr(name))
                w(": ")
            if isinstance(v, dict):
                w("{")
                stack.append((it, False))
                if not all(type(k) is str for k in v):
                    v = {_key(k): x for k, x in v.items()}
                keys = v if type(v) is WireDict else _order(tuple(v))
                it = iter([(k, v[k]) for k in keys])
                need_comma = False
                break
            if isinstance(v, (list, tuple)):
                w("[")
                stack.append((it, True))
                it = iter([(None, x) for x in v])
                need_comma = False
                break
            w(_scalar(v))
        else:
            if not stack:
                return "".join(out)
            it, is_array = stack.pop()
            need_comma = True
            if pretty:
                w("\n" + "    " * len(stack))
            w("]" if is_array else "}")


_member_cache: dict[str, str] = {}


def _member(k: str) -> str:
    m = _member_cache.get(k)
    if m is None:
        m = _qstr(k) + ": "
        if len(k) <= _CACHE_KEY_LEN:
            if len(_member_cache) >= _CACHE_MAX:
                _member_cache.clear()
            _member_cache[k] = m
    return m


def _enc(v: Any) -> str:
    """Compact json-writer.c output, recursively (the common, fast case)."""
    t = type(v)
    if t is str:
        return _qstr(v)
    if t is dict or t is WireDict:
        if not v:
            return "{}"
        try:
            if t is dict:
                keys = tuple(v)
                if len(keys) > 1:
                    keys = _order_cache.get(keys) or _order(keys)
            else:
                keys = v
            return "{" + ", ".join([_member(k) + _enc(v[k]) for k in keys]) + "}"
        except (TypeError, AttributeError):
            if all(type(k) is str for k in v):
                raise
            return _enc(t((_key(k), x) for k, x in v.items()))
    if t is list or t is tuple:
        return "[" + ", ".join([_enc(x) for x in v]) + "]"
    if t is int and -(1 << 63) <= v < (1 << 64):
        return int.__repr__(v)
    if isinstance(v, dict):
        return _enc(dict(v))
    if isinstance(v, (list, tuple)):
        return _enc(list(v))
    return _scalar(v)


def encode(obj: Any, pretty: bool = False) -> bytes:
    """One server message as QEMU writes it: ASCII JSON, QDict member order, CRLF.

    With *pretty*, the layout of QEMU's ``pretty=on`` monitors (4-space indents, CRLF).
    """
    if not pretty:
        try:
            text = _enc(obj)
        except RecursionError:
            text = _dump(obj, False)
        return text.encode("ascii") + b"\r\n"
    return _dump(obj, True).replace("\n", "\r\n").encode("ascii") + b"\r\n"


# --------------------------------------------------------------------------------------
# Message builders: dicts in the member order QEMU puts on the wire


# They return WireDicts (members in wire order); the values inside (a command's result, an
# echoed id, event data) stay plain dicts and are put in QDict order by encode().


def greeting(version: dict, capabilities: list[str]) -> dict:
    """``{"QMP": {"version": ..., "capabilities": [...]}}`` (monitor/qmp.c qmp_greeting).

    *version* is query-version's result in schema order ``{"qemu": {"major", "minor",
    "micro"}, "package"}``; QEMU writes micro, minor, major.
    """
    return WireDict(QMP=WireDict(version=qdict_order(version), capabilities=list(capabilities)))


def ok(ret: Any, id: Any = ABSENT) -> dict:
    """A success response; QEMU writes ``return`` before ``id``."""
    if id is ABSENT:
        return WireDict({"return": ret})
    return WireDict({"return": ret, "id": id})


def err(cls: str, desc: str, id: Any = ABSENT) -> dict:
    """An error response; QEMU writes ``id`` before ``error``, ``class`` before ``desc``."""
    if id is ABSENT:
        return WireDict(error=WireDict({"class": cls, "desc": desc}))
    return WireDict(id=id, error=WireDict({"class": cls, "desc": desc}))


def event(name: str, data: dict | None = None, seconds: int = -1, microseconds: int = -1) -> dict:
    """An event; QEMU writes timestamp, event, data (absent when the event has none).

    seconds/microseconds of -1 mean the time is unknown (qmp-spec).
    """
    msg = WireDict(timestamp=WireDict(seconds=seconds, microseconds=microseconds), event=name)
    if data is not None:
        msg["data"] = data
    return msg
