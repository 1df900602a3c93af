"""Typed errors. Library code raises these (``raise ... from e``); only the CLI prints them.

Messages are lowercase and carry their context, e.g.
``reading layer sha256:ab12...: truncated tar``.
"""
from __future__ import annotations


class LayerdbError(Exception):
    """Base of every error layerdb raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class SourceError(LayerdbError):
    """An image archive or layout is unreadable, malformed or not an image at all."""


class UnsupportedMediaType(SourceError):
    """A manifest names a media type layerdb does not understand."""


class BlobNotFound(SourceError):
    """A blob the manifest names is not in the archive, or not in the cache."""


class RegistryError(SourceError):
    """A registry refused, failed or cannot be reached (after retries), or sent nonsense."""


class DigestMismatch(LayerdbError):
    """Bytes do not hash to the digest that names them (blob digest or diff_id)."""


class CorruptLayer(LayerdbError):
    """A layer's compression stream or tar stream is broken or truncated."""


class StoreError(LayerdbError):
    """The blob cache is missing something it should have, or is damaged."""


class CatalogError(LayerdbError):
    """The catalog cannot be opened, is locked, or a query against it failed."""


class ImageNotFound(LayerdbError):
    """No ingested image matches the reference, or several do and the choice is ambiguous."""

    exit_code = 2


class PathNotFound(LayerdbError):
    """A path is absent from an image's merged filesystem (or deleted by a whiteout)."""

    exit_code = 2


class UnsafePath(LayerdbError):
    """Writing an entry would leave the output directory."""


class ReportError(LayerdbError):
    """A report file is malformed, or its parameters are wrong."""


class UsageError(LayerdbError):
    """The request itself is wrong (bad option values)."""

    exit_code = 2


class NoCatalog(CatalogError):
    """A read command was pointed at a directory that holds no catalog."""


class LimitExceeded(SourceError):
    """Input goes past one of layerdb's explicit limits (JSON size or depth, decompressed
    archive size, ...): refused before it can exhaust memory or disk."""


class NoSpace(LayerdbError):
    """The disk (or the temporary directory) filled up: ``no space left on device``."""


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` is ENOSPC (or EDQUOT), from ``OSError`` or a library that only says so
    in its text (pyarrow, duckdb)."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "no space left on device" in str(e).lower()


# Display of untrusted text in error lines ---------------------------------------------------

#: characters kept per error line; a longer one (a 10 KB name) keeps its head and tail
MAX_LINE = 1000
_BIDI = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A)) | {
    0x200E, 0x200F, 0x061C, 0x2028, 0x2029}  # and the Unicode line/paragraph separators


def printable(text: object) -> str:
    """``text`` (str, bytes or anything) safe for a terminal: control characters (C0, DEL, C1),
    bidi controls and undecodable bytes are shown escaped (``\\x1b``, ``\\u202e``); never
    raises."""
    try:
        if isinstance(text, (bytes, bytearray, memoryview)):
            s = bytes(text).decode("utf-8", "surrogateescape")
        else:
            s = str(text)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the error line
        s = object.__repr__(text)
    out = []
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or o == 0x7F or 0x80 <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif o in _BIDI or 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def error_line(text: object, limit: int = MAX_LINE) -> str:
    """One printable line of at most about ``limit`` characters: head and tail of a longer one,
    with how much was left out."""
    s = printable(text)
    if len(s) <= limit:
        return s
    head, tail = limit * 2 // 3, limit // 4
    return f"{s[:head]}...[{len(s) - head - tail} characters]...{s[-tail:]}"
