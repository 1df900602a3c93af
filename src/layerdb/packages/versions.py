"""Version order per ecosystem, as one byte-sortable key.

``version_key(ecosystem, version)`` returns bytes whose plain byte order (``memcmp``, DuckDB's
BLOB order) is the ecosystem's version order:

- ``deb``: dpkg's ``verrevcmp`` on epoch, upstream version and revision (``~`` sorts before
  everything, even the end; letters before other characters; digit runs numerically);
- ``rpm``: rpm's ``rpmvercmp`` on epoch, version and release (separators ignored, ``~``
  before the end, ``^`` after it, numeric segments newer than alphabetic ones);
- ``apk``: apk-tools' order (numbers, one letter, ``_alpha`` < ``_beta`` < ``_pre`` < ``_rc``
  < release < ``_cvs`` < ``_svn`` < ``_git`` < ``_hg`` < ``_p``, then ``-rN``);
- ``python``: PEP 440 (parsed by ``packaging.version``);
- ``maven``: Maven's ``ComparableVersion`` (``1.0-alpha1`` < ``1.0-beta1`` < ``1.0-rc1`` =
  ``1.0-cr1`` < ``1.0-SNAPSHOT`` < ``1.0`` = ``1.0.0`` = ``1.0.Final`` < ``1.0-sp1`` < ``1.0.1``);
- ``npm`` and ``go``: semantic versioning 2.0 (Go's leading ``v`` dropped; build metadata
  such as ``+incompatible`` ignored; Go pseudo-versions are pre-releases and order by time);
- anything else, and a version its ecosystem cannot parse: dpkg's order on the whole string,
  below every valid version of that ecosystem.

The key is computed once at ingest and stored (``packages.version_key``), so sorting and
``max_by(version, version_key)`` need no function call per row; the SQL functions
``version_cmp`` / ``version_lt`` ... (``catalog_sql.register``) key both sides.
"""
from __future__ import annotations

import functools
import re

_MAX_DIGITS = 0xFFFF


def _num(digits: str) -> bytes:
    """A decimal digit run as an order-preserving, prefix-free key: length, then digits."""
    d = digits.lstrip("0")
    if len(d) > _MAX_DIGITS:  # hostile input: keep it finite (order past 65535 digits is moot)
        d = d[:_MAX_DIGITS]
    return len(d).to_bytes(2, "big") + d.encode("ascii")


# dpkg -----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _dpkg_weight(c: str) -> bytes:
    # dpkg's order(): '~' -1, end 0, letters their code, anything else code + 256
    if c == "~":
        return b"\x00\x01"
    if c.isascii() and c.isalpha():
        return b"\x01" + bytes([ord(c)])
    o = min(ord(c), 0xFFFF - 0x200)
    return (0x200 + o).to_bytes(2, "big")


_DPKG_END = b"\x00\x02"
_RUNS = re.compile(r"([^0-9]*)([0-9]*)")


def _verrev_key(s: str) -> bytes:
    """dpkg's verrevcmp as a key: (non-digit run, digit run) pairs, then an end marker."""
    out = []
    for m in _RUNS.finditer(s):
        nd, d = m.group(1), m.group(2)
        if not nd and not d and m.start() > 0:
            break  # the empty match at the end
        out.append(b"".join(map(_dpkg_weight, nd)) + _DPKG_END + _num(d))
    out.append(_DPKG_END)
    return b"".join(out)


def dpkg_key(version: str) -> bytes:
    v = version.strip()
    epoch = "0"
    if ":" in v:
        e, rest = v.split(":", 1)
        if e.isdigit():
            epoch, v = e, rest
    upstream, revision = v, ""
    if "-" in v:
        upstream, revision = v.rsplit("-", 1)
    return _num(epoch) + _verrev_key(upstream) + _verrev_key(revision)


# rpm ------------------------------------------------------------------------------------------

_RPM_SEG = re.compile(r"[0-9]+|[A-Za-z]+|~|\^")


def _rpmvercmp_key(s: str) -> bytes:
    out = bytearray()
    for m in _RPM_SEG.finditer(s):  # anything else is a separator, ignored
        t = m.group(0)
        if t == "~":
            out += b"\x01"
        elif t == "^":
            out += b"\x03"
        elif t[0].isdigit():
            out += b"\x05" + _num(t)
        else:
            out += b"\x04" + t.encode("ascii") + b"\x00"
    out += b"\x02"  # the end: after '~', before '^' and any segment
    return bytes(out)


def rpm_key(version: str) -> bytes:
    """``[epoch:]version[-release]`` as rpm orders it (epoch absent = 0)."""
    v = version.strip()
    epoch = "0"
    if ":" in v:
        e, rest = v.split(":", 1)
        if e.isdigit():
            epoch, v = e, rest
    ver, rel = v, ""
    if "-" in v:
        ver, rel = v.rsplit("-", 1)
    return _num(epoch) + _rpmvercmp_key(ver) + _rpmvercmp_key(rel)


# apk ------------------------------------------------------------------------------------------

_APK = re.compile(r"^([0-9]+(?:\.[0-9]+)*)([a-z]?)((?:_[a-z]+[0-9]*)*)(?:~([0-9a-f]+))?(?:-r([0-9]+))?$")
_APK_SUFFIX = re.compile(r"_([a-z]+)([0-9]*)")
_APK_PRE = {"alpha": 1, "beta": 2, "pre": 3, "rc": 4}
_APK_POST = {"cvs": 1, "svn": 2, "git": 3, "hg": 4, "p": 5}


def _apk_key(v: str) -> bytes | None:
    m = _APK.match(v.strip())
    if not m:
        return None
    nums, letter, suffixes, commit, rev = m.groups()
    out = bytearray()
    for part in nums.split("."):
        out += b"\x05" + _num(part)
    out += b"\x04" + (letter.encode() if letter else b"\x00")
    for s in _APK_SUFFIX.finditer(suffixes):
        name, n = s.group(1), s.group(2)
        if name in _APK_PRE:
            out += b"\x01" + bytes([_APK_PRE[name]]) + _num(n)
        elif name in _APK_POST:
            out += b"\x03" + bytes([_APK_POST[name]]) + _num(n)
        else:
            return None
    out += b"\x02"  # the end of suffixes: after a pre-release suffix, before a post one
    out += (commit or "").encode() + b"\x00" + _num(rev or "0")
    return bytes(out)


# semver (npm, go) -----------------------------------------------------------------------------

_SEMVER = re.compile(
    r"^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")


def _semver_key(v: str) -> bytes | None:
    m = _SEMVER.match(v.strip())
    if not m:
        return None
    out = bytearray(_num(m.group(1)) + _num(m.group(2)) + _num(m.group(3)))
    pre = m.group(4)
    if pre is None:
        out += b"\x03"  # a release sorts after all its pre-releases
    else:
        out += b"\x01"
        for ident in pre.split("."):
            if ident.isdigit():
                out += b"\x01" + _num(ident)  # numeric identifiers before alphanumeric ones
            else:
                out += b"\x02" + ident.encode("ascii") + b"\x00"
        out += b"\x00"  # fewer identifiers sort first
    return bytes(out)


# PEP 440 --------------------------------------------------------------------------------------

def _pep440_key(v: str) -> bytes | None:
    from packaging.version import InvalidVersion, Version

    try:
        pv = Version(v)
    except InvalidVersion:
        return None
    out = bytearray(_num(str(pv.epoch)))
    rel = list(pv.release)
    while len(rel) > 1 and rel[-1] == 0:  # 1.0 == 1.0.0
        rel.pop()
    for part in rel:
        out += b"\x01" + _num(str(part))
    out += b"\x00"
    # pre-release: a dev release with no pre/post sorts before any pre-release (1.0.dev0 < 1.0a0)
    if pv.pre is None and pv.post is None and pv.dev is not None:
        out += b"\x00"
    elif pv.pre is None:
        out += b"\x02"
    else:
        out += b"\x01" + {"a": b"\x01", "b": b"\x02", "rc": b"\x03"}[pv.pre[0]] + _num(str(pv.pre[1]))
    out += b"\x00" if pv.post is None else b"\x01" + _num(str(pv.post))
    out += b"\x02" if pv.dev is None else b"\x01" + _num(str(pv.dev))
    if pv.local is None:
        out += b"\x00"
    else:
        out += b"\x01"
        for seg in pv.local.split("."):  # numeric segments after alphanumeric ones
            out += (b"\x02" + _num(seg)) if seg.isdigit() else (b"\x01" + seg.encode() + b"\x00")
        out += b"\x00"
    return bytes(out)


# maven ----------------------------------------------------------------------------------------
# org.apache.maven.artifact.versioning.ComparableVersion (Maven 3.8+, with MNG-6964): the version,
# lower-cased, is split into items at '.', at '-' (which opens a sub-list) and where digits meet
# letters (which opens a sub-list too); ints compare numerically, above sub-lists, above
# strings; a string is a qualifier (alpha < beta < milestone < rc = cr < snapshot < "" = ga =
# final = release < sp < any other, others by text; a, b, m directly followed by a digit are
# alpha, beta, milestone); trailing null items (0, "", empty lists) are dropped; a missing
# item compares as null.

_MVN_QUALIFIERS = ("alpha", "beta", "milestone", "rc", "snapshot", "", "sp")
_MVN_ALIASES = {"ga": "", "final": "", "release": "", "cr": "rc"}
_MVN_SHORT = {"a": "alpha", "b": "beta", "m": "milestone"}
_MVN_MAX = 256  # a longer version is not parsed (each item may nest a list)

_MvnItem = tuple  # ("i", digits) | ("s", qualifier) | ("l", [items])


def _mvn_string(s: str, followed_by_digit: bool) -> _MvnItem:
    if followed_by_digit and s in _MVN_SHORT:
        s = _MVN_SHORT[s]
    return ("s", _MVN_ALIASES.get(s, s))


def _mvn_null(item: _MvnItem) -> bool:
    kind, v = item
    return (kind == "i" and v.lstrip("0") == "") or (kind == "s" and v == "") or (kind == "l" and not v)


def _mvn_parse(version: str) -> list:
    v = version.lower()
    top: list = []
    lst, stack = top, [top]
    is_digit, start = False, 0

    def item(text: str, digit: bool) -> _MvnItem:
        return ("i", text) if digit else _mvn_string(text, False)

    def descend(last: _MvnItem) -> list:
        """Append ``last``, then a new sublist that the next items go into."""
        sub: list = []
        lst.append(last)
        lst.append(("l", sub))
        stack.append(sub)
        return sub

    for i, c in enumerate(v):
        if c == ".":
            lst.append(("i", "0") if i == start else item(v[start:i], is_digit))
            start = i + 1
        elif c == "-":
            lst = descend(("i", "0") if i == start else item(v[start:i], is_digit))
            start = i + 1
        elif "0" <= c <= "9":
            if not is_digit and i > start:
                lst = descend(_mvn_string(v[start:i], True))
                start = i
            is_digit = True
        else:
            if is_digit and i > start:
                lst = descend(("i", v[start:i]))
                start = i
            is_digit = False
    if len(v) > start:
        lst.append(item(v[start:], is_digit))
    for lst in reversed(stack):  # innermost first, as Maven pops its stack
        for i in range(len(lst) - 1, -1, -1):
            if _mvn_null(lst[i]):
                del lst[i]
            elif lst[i][0] != "l":
                break
    return top


def _mvn_vs_null(item: _MvnItem) -> int:
    """How an item compares with a missing one (Maven's compareTo(null))."""
    kind, v = item
    if kind == "i":
        return 0 if v.lstrip("0") == "" else 1
    if kind == "s":
        rank = _MVN_QUALIFIERS.index(v) if v in _MVN_QUALIFIERS else len(_MVN_QUALIFIERS)
        return (rank > 5) - (rank < 5)
    for x in v:
        c = _mvn_vs_null(x)
        if c:
            return c
    return 0


def _mvn_list_key(items: list) -> bytes:
    """Per item: how the rest of the list compares with nothing (below, equal, above: the
    end of the list sorts there), its type (string < list < int), its value; then the end."""
    out = bytearray()
    rest = [0] * (len(items) + 1)
    for i in range(len(items) - 1, -1, -1):
        c = _mvn_vs_null(items[i])
        rest[i] = c if c else rest[i + 1]
    for i, (kind, v) in enumerate(items):
        out += bytes([2 + rest[i]])
        if kind == "s":
            if v in _MVN_QUALIFIERS:
                out += b"\x01" + bytes([_MVN_QUALIFIERS.index(v)])
            else:
                out += b"\x01\x07" + v.encode("utf-8", "surrogatepass") + b"\x00"
        elif kind == "l":
            out += b"\x02" + _mvn_list_key(v)
        else:
            out += b"\x03" + _num(v)
    out += b"\x02"  # the end: nothing more, which compares as null
    return bytes(out)


def maven_key(version: str) -> bytes | None:
    """ComparableVersion's order as a key; None for an empty or over-long version. Maven's
    order is not total where a string item meets a list (``1.sp`` < ``1-alpha`` < ``1`` <
    ``1.sp``); there the key says what the rest of each version says against nothing."""
    v = version.strip()
    if not v or len(v) > _MVN_MAX:
        return None
    return _mvn_list_key(_mvn_parse(v))


# all ------------------------------------------------------------------------------------------

_VALID = b"\x01"
_INVALID = b"\x00"  # a version the ecosystem cannot parse sorts below its valid ones


def version_key(ecosystem: str | None, version: str | None) -> bytes | None:
    """The byte-sortable key of ``version`` in ``ecosystem`` (see the module docstring)."""
    if version is None:
        return None
    eco = (ecosystem or "").lower()
    if eco == "deb":
        return dpkg_key(version)
    if eco == "rpm":
        return rpm_key(version)
    parsed: bytes | None
    if eco == "apk":
        parsed = _apk_key(version)
    elif eco in ("python", "pypi"):
        parsed = _pep440_key(version)
    elif eco in ("npm", "go", "golang"):
        parsed = _semver_key(version)
    elif eco == "maven":
        parsed = maven_key(version)
    else:
        return dpkg_key(version)
    if parsed is None:
        return _INVALID + _verrev_key(version)
    return _VALID + parsed


def compare(ecosystem: str | None, a: str | None, b: str | None) -> int | None:
    """-1, 0 or 1 as ``a`` is older than, the same as, or newer than ``b``; None if either is."""
    ka, kb = version_key(ecosystem, a), version_key(ecosystem, b)
    if ka is None or kb is None:
        return None
    return (ka > kb) - (ka < kb)
