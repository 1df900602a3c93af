"""What the dynamic loader reads from an ELF file's headers: class, machine, ``PT_INTERP``,
``DT_NEEDED``, ``DT_RPATH`` / ``DT_RUNPATH`` and ``DT_SONAME``.

The parsing itself is pyelftools' (a well-kept parser; the file is hostile input). Only the
program headers are used, as the loader does: section headers may be stripped or lie. Any
parse failure becomes ``ElfError`` with one line. Imports nothing of layerdb but errors.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

from .errors import LayerdbError

MAGIC = b"\x7fELF"
MAX_NEEDED = 4096  # DT_NEEDED entries one object may name: past this it is not a real object


class ElfError(LayerdbError):
    """A file that starts like an ELF object but whose headers cannot be read."""


@dataclass(frozen=True)
class ElfInfo:
    """The loader-relevant facts of one ELF object. ``elfclass`` is 32 or 64; ``machine`` is
    pyelftools' ``e_machine`` name (``EM_X86_64``); paths and names are as the file has them."""

    elfclass: int
    machine: str
    little_endian: bool
    kind: str  # ET_EXEC, ET_DYN, ...
    interp: str | None = None
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    soname: str | None = None

    def compatible(self, other: ElfInfo) -> bool:
        """Whether the loader of ``self`` could load ``other`` (same class, machine, byte order)."""
        return (self.elfclass, self.machine, self.little_endian) == \
            (other.elfclass, other.machine, other.little_endian)


def is_elf(head: bytes) -> bool:
    return head[:4] == MAGIC


def read_elf(stream: BinaryIO | io.RawIOBase, name: str) -> ElfInfo:
    """Parse the headers of the ELF object in ``stream`` (seekable, positioned anywhere).
    ``name`` is for messages. Raises ``ElfError``."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(stream)  # type: ignore[arg-type]
        interp: str | None = None
        needed: list[str] = []
        rpath: list[str] = []
        runpath: list[str] = []
        soname: str | None = None
        for seg in elf.iter_segments():
            kind = seg["p_type"]
            if kind == "PT_INTERP":
                interp = seg.get_interp_name().rstrip("\0") or None  # type: ignore[attr-defined]
            elif kind == "PT_DYNAMIC":
                for tag in seg.iter_tags():  # type: ignore[attr-defined]
                    t = tag.entry.d_tag
                    if t == "DT_NEEDED":
                        needed.append(tag.needed)
                        if len(needed) > MAX_NEEDED:
                            raise ElfError(f"{name}: more than {MAX_NEEDED} DT_NEEDED entries")
                    elif t == "DT_RPATH":
                        rpath += [p for p in tag.rpath.split(":") if p]
                    elif t == "DT_RUNPATH":
                        runpath += [p for p in tag.runpath.split(":") if p]
                    elif t == "DT_SONAME":
                        soname = tag.soname
        return ElfInfo(elfclass=elf.elfclass, machine=str(elf["e_machine"]),
                       little_endian=bool(elf.little_endian), kind=str(elf["e_type"]),
                       interp=interp, needed=tuple(needed), rpath=tuple(rpath),
                       runpath=tuple(runpath), soname=soname)
    except ElfError:
        raise
    except (ELFError, ValueError, KeyError, IndexError, UnicodeDecodeError, OSError,
            AssertionError, TypeError, AttributeError) as e:  # pyelftools' failures on bad input
        raise ElfError(f"{name}: unreadable ELF headers: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else 'malformed'}") from e
    except Exception as e:  # construct's StreamError and friends
        raise ElfError(f"{name}: unreadable ELF headers: {type(e).__name__}") from e


def expand_origin(entry: str, origin: str, elfclass: int, platform: str = "") -> str:
    """One ``DT_RPATH``/``DT_RUNPATH`` entry with ``$ORIGIN``, ``$LIB`` and ``$PLATFORM``
    substituted as glibc does (``origin``: the directory of the object, inside the image)."""
    lib = "lib64" if elfclass == 64 else "lib"
    out = entry
    for var, val in (("ORIGIN", origin), ("LIB", lib), ("PLATFORM", platform)):
        out = out.replace("${" + var + "}", val).replace("$" + var, val)
    return out
