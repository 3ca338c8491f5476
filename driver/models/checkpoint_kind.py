"""The names inside a `torch.save` file, read without unpickling it: how families recognise their checkpoints.

A checkpoint given by path (`--model PATH`) must be told apart by what it holds, not by how
it is named: a file name is a user's choice (CHGNet writes `.pth.tar`, MACE `.model`, and both
are plain `torch.save` files that anyone may call `.pth`), so an extension claims the wrong
family's files and loads them with the wrong library. And recognising a file must not run it:
a pickle executes whatever its opcodes name, and the libraries' loaders unpickle with torch's
safe mode off (mace switches it off for the whole process), so nothing here calls `torch.load`
or `pickle.load`. `pickletools.genops` only decodes opcodes: it yields the module and class
names a pickle would import and the strings it would build, and imports or calls nothing.

A `torch.save` file is a zip archive whose `<folder>/data.pkl` member is the object's pickle
(tensors are other members); files from torch < 1.6 (or `_use_new_zipfile_serialization=False`)
are a run of pickles, the fourth of which is the object. Both are read up to MAX_PICKLE_BYTES.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path

MAX_PICKLE_BYTES = 32 * 2**20  # a model's pickle is well under 1 MiB here; its tensors are not in it
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a pre-zip torch.save file
LEGACY_HEAD = b"\x80\x02\x8a\x0a"  # how that pickle starts: protocol 2, a 10-byte long
_STRING_OPS = frozenset({"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
                         "STRING", "BINSTRING", "SHORT_BINSTRING"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class PickleNames:
    """What a torch.save file's object pickle names, without building anything."""

    first_class: tuple[str, str] | None  # (module, qualified name) of the first class it imports:
    # for `torch.save(module)`, the module's own class; for a dict of tensors, collections.OrderedDict
    strings: frozenset[str]  # every string constant: dict keys, state_dict parameter names, ...

    def first_class_from(self, package: str) -> bool:
        """Whether the first class the pickle imports comes from `package` (or a subpackage)."""
        return self.first_class is not None and (self.first_class[0] == package
                                                 or self.first_class[0].startswith(package + "."))


def torch_pickle_names(path: Path) -> PickleNames | None:
    """The names in the object pickle of the torch.save file at `path`; None when it is not one
    (a folder, a missing or unreadable file, another format, a pickle over MAX_PICKLE_BYTES)."""
    path = Path(path)
    try:
        if not path.is_file():
            return None
        data = _zip_pickle(path) if zipfile.is_zipfile(path) else _legacy_pickle(path)
        return _names(data) if data is not None else None
    except _READ_ERRORS:
        return None


def _zip_pickle(path: Path) -> bytes | None:
    with zipfile.ZipFile(path) as archive:
        members = [info for info in archive.infolist()
                   if info.filename.count("/") == 1 and info.filename.endswith("/data.pkl")]
        if len(members) != 1 or members[0].file_size > MAX_PICKLE_BYTES:
            return None
        with archive.open(members[0]) as member:
            return member.read(MAX_PICKLE_BYTES)


def _legacy_pickle(path: Path) -> bytes | None:
    """The object pickle of a pre-zip torch file: after the magic number, the protocol
    version and the system info, each its own pickle."""
    with open(path, "rb") as handle:
        if handle.read(len(LEGACY_HEAD)) != LEGACY_HEAD:  # not even the magic number: read no further
            return None
        handle.seek(0)
        stream = io.BytesIO(handle.read(MAX_PICKLE_BYTES))
    if LEGACY_MAGIC not in [arg for _, arg, _ in pickletools.genops(stream)]:
        return None
    for _ in range(2):  # protocol version, sys_info
        for _ in pickletools.genops(stream):
            pass
    return stream.read()


def _names(data: bytes) -> PickleNames:
    """Walk the opcodes once. A class is named by GLOBAL "module name", or (protocol 4+) by
    STACK_GLOBAL over the two strings pushed before it, either of which may come from the memo."""
    strings: set[str] = set()
    first_class: tuple[str, str] | None = None
    memo: dict[int, str | None] = {}
    pushed: list[str | None] = []  # the last two values pushed, where they are strings
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        found: tuple[str, str] | None = None
        if name in _STRING_OPS and isinstance(arg, str):
            strings.add(arg)
            pushed.append(arg)
        elif name in _GET_OPS:
            pushed.append(memo.get(int(arg)))
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in _PUT_OPS:
            memo[int(arg)] = pushed[-1] if pushed else None
        elif name in ("PROTO", "FRAME"):
            continue
        elif name == "GLOBAL":
            module, _, qualname = str(arg).partition(" ")
            found = (module, qualname)
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            module, qualname = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            found = (module, qualname) if module is not None and qualname is not None else None
            pushed.append(None)
        else:
            pushed.append(None)
        if first_class is None and found is not None:
            first_class = found
        del pushed[:-2]
    return PickleNames(first_class, frozenset(strings))
