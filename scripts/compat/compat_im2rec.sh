#!/usr/bin/env bash
# Compatibility of our im2rec with the real im2rec.py 1.9.1 and MXNet's readers.
#
# On one generated folder (baseline, progressive, grey, CMYK and EXIF-rotated JPEGs;
# RGBA, grey and palette PNGs) this packs with im2rec.py and with ours, then checks:
#   1. mxnet.recordio.MXIndexedRecordIO reads ours: same keys, ids, labels and decoded
#      image shapes as im2rec.py's output (and pixels close: mean abs diff reported);
#   2. mx.io.ImageRecordIter (data_shape 3xHxW, path_imgidx) iterates ours with the
#      list's labels in order;
#   3. our --inspect reads MXNet's .rec (ids, labels, sizes, formats);
#   4. --pass-through (with and without --pack-label): payloads byte-identical to
#      im2rec.py's, and in fact the whole .rec and .idx files are identical;
#   5. WebP/BMP/TIFF/PPM (also misnamed), arithmetic-coded, EOI-less, CMYK and
#      RGB-colourspace JPEGs, EXIF-rotated and grey+tRNS PNGs: packed, with
#      im2rec.py's decoded shapes; list-mode options, option prefixes and a CR-only
#      list are accepted, with output identical to im2rec.py's.
# Prints PASS/FAIL lines; exits non-zero if any check fails.
# Usage: [IM2REC=path/to/im2rec] scripts/compat/compat_im2rec.sh [WORKDIR]   (default: a fresh temporary folder)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
py=$("$here/mxnet_venv.sh")
im2rec_py=$("$py" -c 'import mxnet, os; print(os.path.join(os.path.dirname(mxnet.__file__), "tools", "im2rec.py"))')
work=${1:-$(mktemp -d)}
mkdir -p "$work"
echo "work folder: $work" >&2

# IM2REC: an im2rec binary to check (CI passes the one its tests built); default: a release build.
if [ -n "${IM2REC:-}" ]; then
  ours=$IM2REC
else
  (cd "$top" && cargo build --release -q -p im2rec)
  ours="$top/target/release/im2rec"
fi

export WORK="$work" OURS="$ours" IM2REC_PY="$im2rec_py" TOP="$top"
"$py" - <<'EOF'
import io, json, os, subprocess, sys, shutil
import numpy as np
import cv2
from PIL import Image
import mxnet as mx

work, ours, im2rec_py = os.environ["WORK"], os.environ["OURS"], os.environ["IM2REC_PY"]
root = os.path.join(work, "images")
rng = np.random.default_rng(7)
failures = 0

def check(ok, what):
    global failures
    print(("PASS " if ok else "FAIL ") + what)
    failures += 0 if ok else 1

def photo(w, h):
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    base = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)

# --- the folder -------------------------------------------------------------
if os.path.exists(root):
    shutil.rmtree(root)
for c in ["cat", "dog", "fish"]:
    os.makedirs(os.path.join(root, c))
files = []
def save(rel, img, **kw):
    img.save(os.path.join(root, rel), **kw)
    files.append(rel)
for i in range(4):
    save(f"cat/base{i}.jpg", Image.fromarray(photo(500 - 37 * i, 375 + 11 * i)), quality=92)
save("cat/prog.jpg", Image.fromarray(photo(320, 480)), quality=90, progressive=True)
save("cat/gray.jpg", Image.fromarray(photo(300, 200)).convert("L"), quality=90)
save("dog/cmyk.jpg", Image.fromarray(photo(240, 180)).convert("CMYK"), quality=90)
exif = Image.Exif(); exif[0x0112] = 6  # rotate 90: OpenCV's imread applies it
save("dog/exif6.jpg", Image.fromarray(photo(400, 300)), quality=90, exif=exif.tobytes())
save("dog/big.jpg", Image.fromarray(photo(2400, 1800)), quality=90)
rgba = np.dstack([photo(160, 120), rng.integers(0, 256, (120, 160), dtype=np.uint8)])
save("fish/rgba.png", Image.fromarray(rgba, "RGBA"))
save("fish/gray.png", Image.fromarray(photo(100, 140)).convert("L"))
save("fish/palette.png", Image.fromarray(photo(90, 70)).convert("P"))

def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        print(f"FAIL command {cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
        sys.exit(1)
    return r

def pack(kind, name, lst_text, *flags, img_root=None):
    d = os.path.join(work, kind, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    # Bytes are written as they are (a list with CR line ends, say).
    with open(os.path.join(d, name + ".lst"), "wb") as f:
        f.write(lst_text if isinstance(lst_text, bytes) else lst_text.encode())
    prefix = os.path.join(d, name)
    if kind == "mx":
        run([sys.executable, im2rec_py, *flags, "--num-thread", "2", prefix, img_root or root])
    else:
        run([ours, *flags, "--no-progress", prefix, img_root or root])
    return prefix + ".rec", prefix + ".idx"

# im2rec.py makes the list (sorted, labels by folder, shuffled with seed 100).
lst_prefix = os.path.join(work, "made")
run([sys.executable, im2rec_py, "--list", "--recursive", lst_prefix, root])
lst_text = open(lst_prefix + ".lst").read()
rows = [l.split("\t") for l in lst_text.splitlines()]
labels = {int(r[0]): float(r[1]) for r in rows}

# --- 1. MXIndexedRecordIO reads ours like MXNet's own output ------------------
size = 64
mx_rec, mx_idx = pack("mx", "data", lst_text, "--resize", str(size))
our_rec, our_idx = pack("ours", "data", lst_text, "--resize", str(size))
mx_r = mx.recordio.MXIndexedRecordIO(mx_idx, mx_rec, "r")
our_r = mx.recordio.MXIndexedRecordIO(our_idx, our_rec, "r")
check(list(mx_r.keys) == list(our_r.keys), f"MXIndexedRecordIO: same keys in the same order ({len(our_r.keys)} records)")
shape_ok, head_ok, diffs = True, True, []
for k in our_r.keys:
    h1, im1 = mx.recordio.unpack_img(mx_r.read_idx(k))
    h2, im2 = mx.recordio.unpack_img(our_r.read_idx(k))
    if (h2.flag, h2.label, h2.id, h2.id2) != (h1.flag, h1.label, h1.id, h1.id2) or h2.label != labels[k]:
        head_ok = False
        print(f"  key {k}: header ours {h2} vs mxnet {h1}")
    if im1.shape != im2.shape:
        shape_ok = False
        print(f"  key {k}: decoded shape ours {im2.shape} vs mxnet {im1.shape}")
    else:
        diffs.append(np.abs(im1.astype(int) - im2.astype(int)).mean())
check(head_ok, "MXIndexedRecordIO: IRHeader flag/label/id/id2 equal to im2rec.py's for every key")
check(shape_ok, f"MXIndexedRecordIO: decoded shapes equal to im2rec.py's (resize {size}, incl. CMYK, EXIF-rotated, PNG, progressive)")
print(f"  pixels: mean abs diff per record vs im2rec.py: max {max(diffs):.2f}, mean {np.mean(diffs):.2f} (0-255)")
check(max(diffs) < 12, "pixels close to im2rec.py's (mean abs diff < 12 per record)")

for flags, what in [(["--center-crop", "--resize", "48"], "--center-crop --resize 48"),
                    (["--color", "0", "--resize", "40"], "--color 0 --resize 40"),
                    (["--color", "-1", "--encoding", ".png"], "--color -1 --encoding .png"),
                    (["--center-crop"], "--center-crop without resize")]:
    a = mx.recordio.MXIndexedRecordIO(*reversed(pack("mx", "v", lst_text, *flags)), "r")
    b = mx.recordio.MXIndexedRecordIO(*reversed(pack("ours", "v", lst_text, *flags)), "r")
    bad = [(k, mx.recordio.unpack_img(a.read_idx(k))[1].shape, mx.recordio.unpack_img(b.read_idx(k))[1].shape)
           for k in a.keys if mx.recordio.unpack_img(a.read_idx(k))[1].shape != mx.recordio.unpack_img(b.read_idx(k))[1].shape]
    for k, s1, s2 in bad:
        print(f"  key {k}: mxnet {s1} ours {s2}")
    check(list(a.keys) == list(b.keys) and not bad, f"decoded shapes equal to im2rec.py's with {what}")

# --- 2. ImageRecordIter iterates ours ------------------------------------------
it = mx.io.ImageRecordIter(path_imgrec=our_rec, path_imgidx=our_idx, data_shape=(3, size, size),
                           batch_size=4, shuffle=False, round_batch=False)
seen = []
for batch in it:
    n = 4 - batch.pad
    assert batch.data[0].shape == (4, 3, size, size)
    seen.extend(batch.label[0].asnumpy()[:n].tolist())
want = [labels[k] for k in our_r.keys]
check(seen == want, f"ImageRecordIter (data_shape 3x{size}x{size}, path_imgidx): {len(seen)} labels in list order")

# --- 3. our --inspect reads MXNet's .rec --------------------------------------
out = run([ours, "--inspect", mx_rec]).stdout.splitlines()
js = [json.loads(l) for l in out]
ok = len(js) == len(mx_r.keys)
for j, k in zip(js, mx_r.keys):
    h, im = mx.recordio.unpack_img(mx_r.read_idx(k))
    ok &= j["id"] == h.id and j["labels"] == [h.label] and j["format"] == "jpeg"
    ok &= (j["height"], j["width"], j["channels"]) == im.shape
    ok &= j["offset"] == mx_r.idx[k]
check(ok, f"our --inspect reads im2rec.py's .rec: ids, labels, offsets, sizes, channels ({len(js)} records)")

# --- 4. --pass-through payloads byte-identical ----------------------------------
for flags, lst in [(["--pass-through"], lst_text),
                   (["--pass-through", "--pack-label"],
                    "".join(f"{r[0]}\t{r[1]}\t{float(i % 2):f}\t{float(i % 3):f}\t{r[-1]}\n" for i, r in enumerate(rows)))]:
    a_rec, a_idx = pack("mx", "pt", lst, *flags)
    b_rec, b_idx = pack("ours", "pt", lst, *flags)
    a = mx.recordio.MXIndexedRecordIO(a_idx, a_rec, "r")
    b = mx.recordio.MXIndexedRecordIO(b_idx, b_rec, "r")
    same = list(a.keys) == list(b.keys) and all(a.read_idx(k) == b.read_idx(k) for k in a.keys)
    files_ok = same
    for k in b.keys:
        _, payload = mx.recordio.unpack(b.read_idx(k))
        rel = next(r[-1] for r in rows if int(r[0]) == k)
        files_ok &= payload == open(os.path.join(root, rel), "rb").read()
    check(same and files_ok, f"{' '.join(flags)}: payloads byte-identical to im2rec.py's and to the source files")
    check(open(a_rec, "rb").read() == open(b_rec, "rb").read() and open(a_idx).read() == open(b_idx).read(),
          f"{' '.join(flags)}: whole .rec and .idx files identical to im2rec.py's")

# --- 5. files and command lines im2rec.py takes beyond the common cases ---------
# WebP, BMP, TIFF and PPM (OpenCV decodes them; also under a .jpg name), an
# arithmetic-coded JPEG (with EXIF orientation 6), a JPEG missing only its final EOI
# marker (with --resize, which decodes big JPEGs at reduced scale), CMYK and
# RGB-colourspace JPEGs with --color 0, a PNG with EXIF orientation 6 in an eXIf
# chunk, and a grey PNG with a tRNS colour under --color -1.
extra = os.path.join(work, "extra")
if os.path.exists(extra):
    shutil.rmtree(extra)
os.makedirs(extra)
pic = Image.fromarray(photo(130, 90))
pic.save(os.path.join(extra, "w.webp"), quality=90)
pic.save(os.path.join(extra, "webp_as.jpg"), format="WEBP", lossless=True)
pic.save(os.path.join(extra, "b.bmp"))
pic.save(os.path.join(extra, "bmp_as.jpg"), format="BMP")
pic.save(os.path.join(extra, "t.tiff"))
pic.save(os.path.join(extra, "p.ppm"))
shutil.copy(os.path.join(os.environ["TOP"], "im2rec/tests/fixtures/arith_exif6.jpg"), extra)
shutil.copy(os.path.join(os.environ["TOP"], "im2rec/tests/fixtures/rgb_colorspace.jpg"), extra)
big = io.BytesIO()
Image.fromarray(photo(1200, 900)).save(big, format="JPEG", quality=90)
assert big.getvalue()[-2:] == b"\xff\xd9"
open(os.path.join(extra, "noeoi.jpg"), "wb").write(big.getvalue()[:-2])
Image.fromarray(photo(240, 180)).convert("CMYK").save(os.path.join(extra, "cmyk.jpg"), quality=90)
exif = Image.Exif(); exif[0x0112] = 6
pic.save(os.path.join(extra, "exif6.png"), exif=exif.tobytes())
Image.fromarray(photo(50, 40)).convert("L").save(os.path.join(extra, "graytrns.png"), transparency=0)
names = sorted(os.listdir(extra))
extra_lst = "".join(f"{i}\t{i % 3}\t{n}\n" for i, n in enumerate(names))
for flags in ([], ["--resize", "64"], ["--color", "0"], ["--color", "-1", "--encoding", ".png"]):
    a = mx.recordio.MXIndexedRecordIO(*reversed(pack("mx", "x", extra_lst, *flags, img_root=extra)), "r")
    b = mx.recordio.MXIndexedRecordIO(*reversed(pack("ours", "x", extra_lst, *flags, img_root=extra)), "r")
    bad = []
    for k in a.keys:
        s1 = mx.recordio.unpack_img(a.read_idx(k))[1].shape
        s2 = mx.recordio.unpack_img(b.read_idx(k))[1].shape if k in b.keys else None
        if s1 != s2:
            bad.append((names[k], s1, s2))
    for n, s1, s2 in bad:
        print(f"  {n}: mxnet {s1} ours {s2}")
    check(list(a.keys) == list(b.keys) and len(a.keys) == len(names) and not bad,
          f"{' '.join(flags) or 'defaults'}: WebP/BMP/TIFF/PPM, arithmetic, no-EOI, CMYK, RGB JPEGs and EXIF/tRNS PNGs packed with im2rec.py's shapes ({len(names)} files)")

# im2rec.py's list-mode options are accepted (and ignored) when packing, option
# prefixes work, and the list is read like read_list: lone CR line ends, `1_0` labels.
cr_lst = "".join(f"{r[0]}\t{int(float(r[1]))}_0\t{r[-1]}\r" for r in rows).encode()
flags = ["--pass", "--recursive", "--no-shuffle", "--chunks", "2", "--train-ratio", "0.8",
         "--num-thread", "-1", "--quality", "0"]
a_rec, a_idx = pack("mx", "cr", cr_lst, *flags)
b_rec, b_idx = pack("ours", "cr", cr_lst, *flags)
check(open(a_rec, "rb").read() == open(b_rec, "rb").read() and open(a_idx).read() == open(b_idx).read()
      and len(mx.recordio.MXIndexedRecordIO(b_idx, b_rec, "r").keys) == len(rows),
      "list-mode options, --pass prefix, CR-only list with 1_0 labels: .rec and .idx identical to im2rec.py's")

print(f"{failures} check(s) failed" if failures else "all checks passed")
sys.exit(1 if failures else 0)
EOF
