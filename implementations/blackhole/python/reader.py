"""blackhole reader: decode a folder of recordings and print one JSON line.

    reader.py DIR

Reads every *.lz4 and *.lz4.tmp file of DIR (sorted by name, bytewise), each
a sequence of LZ4 frames (python-lz4's LZ4FrameDecompressor, one per frame)
holding records: an 8-byte little-endian length, then one FlatBuffers
`fbr.Request` buffer. The Python FlatBuffers runtime has no verifier, so
every offset is checked against the buffer here (bounds, alignment, string
terminators) before the generated accessors (fbr/Request.py) read the fields.

Prints {"ok", "files", "tmp_files", "records", "stream_bytes", "file_bytes",
"truncated_tmp", "digest", "error"} (the scenario's "Readers" section);
exit 0 when every file decoded, else 1. A .tmp file may end inside a frame,
a block or a record: the complete records before count, and the file is
counted in truncated_tmp.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # fbr/

import lz4.frame  # noqa: E402

from fbr.Request import Request  # noqa: E402

CHUNK = 1 << 20               # compressed bytes read at a time
MAX_RECORD = 64 << 20         # a longer length prefix is corruption, not a record
U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")
I32 = struct.Struct("<i")
U16 = struct.Struct("<H")
FIELDS = 5                    # id, method, uri, headers (strings), body ([ubyte])


class FormatError(Exception):
    pass


def verify(buf, base: int, size: int) -> None:
    """Bounds-check the Request table in buf[base:base+size] (offsets are
    relative to base), as the FlatBuffers verifiers of other runtimes do."""
    end = base + size
    if size < 8:
        raise FormatError(f"buffer of {size} bytes")
    root = U32.unpack_from(buf, base)[0]
    if root % 4 or root + 4 > size:
        raise FormatError("root offset out of the buffer or misaligned")
    tab = base + root
    vt = tab - I32.unpack_from(buf, tab)[0]
    if vt < base or vt % 2 or vt + 4 > end:
        raise FormatError("vtable out of the buffer or misaligned")
    vt_len, obj_len = U16.unpack_from(buf, vt)[0], U16.unpack_from(buf, vt + 2)[0]
    if vt_len < 4 or vt_len % 2 or vt + vt_len > end:
        raise FormatError("vtable runs past the buffer")
    if obj_len < 4 or tab + obj_len > end:
        raise FormatError("table runs past the buffer")
    for i in range(FIELDS):
        slot = 4 + 2 * i
        if slot >= vt_len:
            break
        o = U16.unpack_from(buf, vt + slot)[0]
        if o == 0:
            continue
        if o < 4 or o + 4 > obj_len:
            raise FormatError(f"field {i} outside its table")
        at = tab + o
        if (at - base) % 4:
            raise FormatError(f"field {i}: offset misaligned")
        vec = at + U32.unpack_from(buf, at)[0]
        if (vec - base) % 4 or vec + 4 > end:
            raise FormatError(f"field {i}: vector out of the buffer or misaligned")
        n = U32.unpack_from(buf, vec)[0]
        data = vec + 4
        if i < 4:  # a string: its bytes and a 0 terminator
            if data + n + 1 > end or buf[data + n] != 0:
                raise FormatError(f"field {i}: string runs past the buffer or is not terminated")
        elif data + n > end:
            raise FormatError(f"field {i}: vector runs past the buffer")


def fields(buf, base: int, size: int) -> tuple:
    """(id, method, uri, headers, body) of one verified record; a missing
    field is empty; a record without an id is an error."""
    verify(buf, base, size)
    r = Request.GetRootAs(buf, base)
    rid = r.Id()
    if not rid:
        raise FormatError("record without an id")
    tab = r._tab
    o = tab.Offset(12)
    if o:
        start = tab.Vector(o)
        body = bytes(buf[start:start + tab.VectorLen(o)])
    else:
        body = b""
    return rid, r.Method() or b"", r.Uri() or b"", r.Headers() or b"", body


class Reader:
    def __init__(self) -> None:
        self.stats = {"ok": True, "files": 0, "tmp_files": 0, "records": 0, "stream_bytes": 0,
                      "file_bytes": 0, "truncated_tmp": 0, "digest": "", "error": None}
        self._h = hashlib.sha256()

    def _records(self, pending: bytearray, name: str) -> int:
        """Digest the complete records at the start of pending; returns the
        bytes consumed."""
        st, update, pack = self.stats, self._h.update, U32.pack
        pos, n = 0, len(pending)
        with memoryview(pending) as mv:
            while n - pos >= 8:
                size = U64.unpack_from(mv, pos)[0]
                if size > MAX_RECORD:
                    raise FormatError(f"{name}: record length {size} is not plausible")
                if n - pos - 8 < size:
                    break
                st["stream_bytes"] += 8 + size      # decompressed, whether it decodes or not
                try:
                    rec = fields(mv, pos + 8, size)
                except (FormatError, struct.error, IndexError) as exc:
                    raise FormatError(f"{name}: record {st['records'] + 1}: {exc}") from None
                pos += 8 + size
                st["records"] += 1
                for f in rec:
                    update(pack(len(f)))
                    update(f)
        return pos

    def read_file(self, path: str, name: str) -> None:
        tmp = name.endswith(".tmp")
        pending = bytearray()
        dec = lz4.frame.LZ4FrameDecompressor()
        in_frame = False
        with open(path, "rb") as f:
            while True:
                data = f.read(CHUNK)
                if not data:
                    break
                while data:
                    try:
                        out = dec.decompress(data)
                    except RuntimeError as exc:
                        if tmp:                 # a crash's torn tail
                            self.stats["truncated_tmp"] += 1
                            return
                        raise FormatError(f"{name}: LZ4: {exc}") from None
                    in_frame = True
                    if out:
                        pending += out
                        used = self._records(pending, name)
                        if used:
                            del pending[:used]
                    if dec.eof:                 # next frame, if any, follows
                        data = dec.unused_data
                        dec = lz4.frame.LZ4FrameDecompressor()
                        in_frame = bool(data)
                    else:
                        data = b""
        open_frame = in_frame and not dec.eof
        if open_frame or pending:
            if tmp:
                self.stats["truncated_tmp"] += 1
                return
            what = "an LZ4 frame" if open_frame else f"a record ({len(pending)} bytes left)"
            raise FormatError(f"{name}: file ends inside {what}")

    def read_dir(self, folder: str) -> dict:
        st = self.stats
        try:
            names = sorted((n for n in os.listdir(folder) if n.endswith(".lz4") or n.endswith(".lz4.tmp")),
                           key=os.fsencode)
            for name in names:
                path = os.path.join(folder, name)
                st["tmp_files" if name.endswith(".tmp") else "files"] += 1
                st["file_bytes"] += os.stat(path).st_size
                self.read_file(path, name)
        except (FormatError, OSError) as exc:
            st["ok"] = False
            st["error"] = str(exc)
        st["digest"] = self._h.hexdigest()
        return st


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: reader.py DIR", file=sys.stderr)
        return 2
    reader = Reader()
    if not os.path.isdir(argv[0]):
        reader.stats.update(ok=False, error=f"{argv[0]}: not a folder", digest=reader._h.hexdigest())
        stats = reader.stats
    else:
        stats = reader.read_dir(argv[0])
    print(json.dumps(stats), flush=True)
    return 0 if stats["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
