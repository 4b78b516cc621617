#!/usr/bin/env python3
"""Convert Fashion-MNIST IDX files (Debian package `dataset-fashion-mnist`) into class folders of PNGs.

usage: fashion_mnist_to_folders.py OUT_DIR [--split train|t10k] [--per-class N] [--offset K] [--classes 0,1,..]

Takes, for each selected class, the images number K..K+N-1 of that class in file order, so subsets are
deterministic and disjoint for different offsets. Needs only the Python standard library (PNG is written
with zlib), so it runs on a clean machine.
"""
import argparse, gzip, os, struct, zlib

CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
SRC = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def png_gray(width, height, pixels):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + pixels[r * width:(r + 1) * width] for r in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--split", default="train", choices=["train", "t10k"])
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    args = ap.parse_args()
    wanted = [int(c) for c in args.classes.split(",")]
    (n, h, w), images = read_idx(os.path.join(SRC, f"{args.split}-images-idx3-ubyte.gz"))
    (_,), labels = read_idx(os.path.join(SRC, f"{args.split}-labels-idx1-ubyte.gz"))
    seen = {c: 0 for c in wanted}
    written = {c: 0 for c in wanted}
    for i in range(n):
        c = labels[i]
        if c not in seen:
            continue
        k = seen[c]
        seen[c] += 1
        if k < args.offset or written[c] >= args.per_class:
            continue
        d = os.path.join(args.out, CLASSES[c])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{args.split}_{i:05d}.png"), "wb") as f:
            f.write(png_gray(w, h, images[i * h * w:(i + 1) * h * w]))
        written[c] += 1
        if all(v >= args.per_class for v in written.values()):
            break
    print(f"wrote {sum(written.values())} images to {args.out}")


if __name__ == "__main__":
    main()
