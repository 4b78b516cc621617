#!/usr/bin/env python3
"""Write small RecordIO fixtures with the real MXNet 1.9.1 for im2rec/tests/recordio.rs.

Run with the MXNet venv's python:
    "$(scripts/mxnet_venv.sh)" scripts/make_recordio_fixtures.py [OUT_DIR]
OUT_DIR defaults to im2rec/tests/fixtures. Writes:
  mxnet_small.rec / mxnet_small.idx  written by mxnet.recordio.MXIndexedRecordIO.write_idx
  mxnet_small.json                   what went in (keys, headers, labels, content, the
                                     payload bytes) and what MXNet read back, so the Rust
                                     test can check our readers and writer against it.
Everything is deterministic: re-running gives byte-identical files.
"""
import json
import os
import struct
import sys

import numpy as np
from mxnet import recordio

MAGIC = struct.pack("<I", 0xCED7230A)

# (key, kind, header label (number, list or None for a raw payload), content bytes)
RECORDS = [
    (7, "image", 3.0, b"plain image bytes"),
    (3, "image", [1.0, 0.0, 2.0], b"multi-label content"),
    (100, "raw", None, b""),  # an empty payload
    (42, "image", 1.0, MAGIC + b"after the magic"),  # content at payload offset 24: aligned magic
    (0, "raw", None, b"QQQQ" + MAGIC + b"RRRR" + MAGIC + b"S"),  # two splits: cflags 1, 2, 3
    (5, "image", 0.0, b"ab" + MAGIC + b"cd"),  # magic at payload offset 26: not split
    (9, "image", 2.5, b""),  # header only, empty content
    (11, "raw", None, MAGIC),  # the magic alone: two empty parts
    (12, "image", [4.0], b"x"),  # a one-element list still gives flag=1
    (8, "image", [0.5, -1.25, 1e6, 3.0, 7.0], MAGIC * 2 + b"tail"),  # labels, then adjacent magics
]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("im2rec", "tests", "fixtures")
    os.makedirs(out, exist_ok=True)
    rec_path = os.path.join(out, "mxnet_small.rec")
    idx_path = os.path.join(out, "mxnet_small.idx")
    writer = recordio.MXIndexedRecordIO(idx_path, rec_path, "w")
    manifest = []
    for key, kind, label, content in RECORDS:
        if kind == "raw":
            payload = content
        else:
            payload = recordio.pack(recordio.IRHeader(0, label, key, 0), content)
        offset = writer.tell()
        writer.write_idx(key, payload)
        manifest.append({"key": key, "kind": kind, "offset": offset,
                         "payload_hex": payload.hex(), "content_hex": content.hex()})
    writer.close()

    reader = recordio.MXIndexedRecordIO(idx_path, rec_path, "r")
    assert reader.keys == [r["key"] for r in manifest], reader.keys
    for entry in manifest:
        payload = reader.read_idx(entry["key"])
        assert payload.hex() == entry["payload_hex"], entry
        if entry["kind"] == "image":
            header, content = recordio.unpack(payload)
            labels = np.atleast_1d(np.asarray(header.label, dtype=np.float32))
            entry["header"] = {"flag": int(header.flag),
                               "label": 0.0 if header.flag > 0 else float(header.label),
                               "id": int(header.id), "id2": int(header.id2)}
            entry["labels"] = [float(x) for x in labels]
            assert content.hex() == entry["content_hex"], entry
    reader.close()

    with open(os.path.join(out, "mxnet_small.json"), "w") as f:
        json.dump({"mxnet": __import__("mxnet").__version__, "records": manifest}, f, indent=1)
        f.write("\n")
    print(f"wrote {rec_path} ({os.path.getsize(rec_path)} bytes), {idx_path}, mxnet_small.json",
          file=sys.stderr)


if __name__ == "__main__":
    main()
