#!/usr/bin/env bash
# Throughput of our im2rec against the real im2rec.py 1.9.1 (OpenCV), same inputs,
# same flags (--resize 256 --quality 95), same --num-thread (1 and 2).
#
# Inputs (generated once into WORKDIR, photo-like: smooth gradients, shapes and
# sensor-like noise, JPEG quality 90):
#   small: 400 images of about 500x375
#   large:  40 images of 4000x3000 (12 MP)
# Each configuration runs REPEATS times (default 3) on a warm page cache, the two
# tools alternating so that both see the same background load; the best time is kept.
# Prints the load average, a table of images/s, the wall-clock ratio ours / im2rec.py
# (with and without im2rec.py's start-up) and the CPU-time ratio (user + sys,
# children included: less sensitive to other processes on a busy machine).
# Usage: scripts/bench/bench_im2rec.sh [WORKDIR]
#   env: REPEATS, SMALL, LARGE (image counts), SETS (default small,large),
#        CARGO_TARGET_DIR (where the release build goes), IM2REC_FEATURES (e.g. simd)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
py=$("$here/../compat/mxnet_venv.sh")
im2rec_py=$("$py" -c 'import mxnet, os; print(os.path.join(os.path.dirname(mxnet.__file__), "tools", "im2rec.py"))')
work=${1:-${TMPDIR:-/tmp}/bench_im2rec}
mkdir -p "$work"

(cd "$top" && cargo build --release -q -p im2rec ${IM2REC_FEATURES:+--features "$IM2REC_FEATURES"})
ours="${CARGO_TARGET_DIR:-$top/target}/release/im2rec"

export WORK="$work" OURS="$ours" IM2REC_PY="$im2rec_py" REPEATS="${REPEATS:-3}" \
  SMALL="${SMALL:-400}" LARGE="${LARGE:-40}" SETS="${SETS:-small,large}"
"$py" - <<'EOF'
import os, resource, subprocess, sys, time
import numpy as np
from PIL import Image

work, ours, im2rec_py = os.environ["WORK"], os.environ["OURS"], os.environ["IM2REC_PY"]
repeats = int(os.environ["REPEATS"])

def photo(w, h, seed):
    rng = np.random.default_rng(seed)
    # Low-frequency colour field (upsampled random grid) + a few shapes + noise.
    grid = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid.astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        field[mask] = field[mask] * 0.5 + rng.uniform(0, 255, 3) * 0.5
    field += rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))

def make_set(name, n, w, h):
    root = os.path.join(work, name, "img")
    os.makedirs(root, exist_ok=True)
    lst = os.path.join(work, name, "list.lst")
    rows = []
    for i in range(n):
        rel = f"{i:04d}.jpg"
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            photo(w + (i % 7) * 3, h + (i % 5) * 2, i).save(path, quality=90)
        rows.append(f"{i}\t{float(i % 10):f}\t{rel}\n")
    with open(lst, "w") as f:
        f.writelines(rows)
    return root, lst

def run_once(cmd):
    """Wall seconds and CPU seconds (user + sys of the process and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"{cmd} failed ({r.returncode}): {r.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dt, cpu

load_before = os.getloadavg()
# im2rec.py pays Python + mxnet + cv2 start-up once per run; measure it so the
# table can also show the ratio without it (steady-state throughput).
startup = min(run_once([sys.executable, "-c", "import mxnet, cv2"])[0] for _ in range(repeats))

sets = [("small", int(os.environ["SMALL"]), 500, 375), ("large", int(os.environ["LARGE"]), 4000, 3000)]
sets = [s for s in sets if s[0] in os.environ["SETS"].split(",")]
rows = []
for name, n, w, h in sets:
    root, lst = make_set(name, n, w, h)
    subprocess.run(f"cat {root}/* > /dev/null", shell=True, check=True)  # warm the page cache
    for threads in (1, 2):
        cmds = {}
        for tool in ("im2rec.py", "ours"):
            out = os.path.join(work, name, f"out_{tool}_{threads}")
            os.makedirs(out, exist_ok=True)
            prefix = os.path.join(out, "list")
            os.symlink(lst, prefix + ".lst") if not os.path.exists(prefix + ".lst") else None
            if tool == "ours":
                cmds[tool] = [ours, "--resize", "256", "--quality", "95", "--num-thread", str(threads), "--no-progress", prefix, root]
            else:
                cmds[tool] = [sys.executable, im2rec_py, "--resize", "256", "--quality", "95", "--num-thread", str(threads), prefix, root]
        # Alternate the tools so that both see the same background load; keep the best.
        runs = {tool: [] for tool in cmds}
        for _ in range(repeats):
            for tool, cmd in cmds.items():
                runs[tool].append(run_once(cmd))
        wa, wb = (min(w for w, _ in runs[t]) for t in ("im2rec.py", "ours"))
        ca, cb = (min(c for _, c in runs[t]) for t in ("im2rec.py", "ours"))
        a, b = n / wa, n / wb
        a_steady = n / max(wa - startup, 1e-9)
        rows.append((f"{name} ({w}x{h})", n, threads, a, b, b / a, b / a_steady, ca / cb))

load_after = os.getloadavg()
print(f"load average (1, 5, 15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}, "
      f"after: {' '.join(f'{x:.2f}' for x in load_after)} ({os.cpu_count()} CPUs)")
print(f"im2rec.py start-up (import mxnet, cv2): {startup:.2f} s, included in its img/s")
print(f"{'set':<20} {'images':>6} {'threads':>7} {'im2rec.py img/s':>16} {'ours img/s':>11} {'ours/py':>8} {'excl. start-up':>15} {'CPU-time ratio':>15}")
for r in rows:
    print(f"{r[0]:<20} {r[1]:>6} {r[2]:>7} {r[3]:>16.1f} {r[4]:>11.1f} {r[5]:>7.2f}x {r[6]:>14.2f}x {r[7]:>14.2f}x")
EOF
