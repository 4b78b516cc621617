#!/usr/bin/env bash
# Golden comparison of `im2list` (and `im2rec --list`) against the real `im2rec.py --list`
# (MXNet 1.9.1).
#
# Builds several image trees (flat and recursive, about 1000 files each, plus the
# 23-image tree of im2list/tests/golden), runs both tools on each case from separate
# working directories with the same relative PREFIX and ROOT, and `cmp`s every list
# produced. It also checks that im2list's stderr holds exactly the `dir label` lines
# im2rec.py prints on stdout, and that PREFIX.classes holds their directory names.
# Prints one PASS/FAIL line per case; exits 1 if any case fails.
#
#   scripts/compat/compat_im2list.sh                  compare
#   scripts/compat/compat_im2list.sh --update-golden  also rewrite im2list/tests/golden/tree23/*/
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
update=0
[[ ${1:-} == --update-golden ]] && update=1

py=$("$here/mxnet_venv.sh")
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
im2rec_py=$site/mxnet/tools/im2rec.py
[[ -f $im2rec_py ]] || { echo "im2rec.py not found at $im2rec_py" >&2; exit 2; }

(cd "$repo" && cargo build -q -p im2list -p im2rec)
target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
  "$py" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
im2list=$target/debug/im2list
im2rec=$target/debug/im2rec

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/trees"

# make_tree NAME < spec: `path` = empty file, `path/` = folder, `path -> target` = symlink.
make_tree() {
  "$py" -c '
import os, sys
root = sys.argv[1]
os.makedirs(root)
for line in sys.stdin.read().splitlines():
    if not line or line.startswith("#"):
        continue
    if " -> " in line:
        path, target = line.split(" -> ", 1)
        os.makedirs(os.path.dirname(os.path.join(root, path)) or root, exist_ok=True)
        os.symlink(target, os.path.join(root, path))
    elif line.endswith("/"):
        os.makedirs(os.path.join(root, line), exist_ok=True)
    else:
        p = os.path.join(root, line)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "w").close()
' "$work/trees/$1"
}

# A deterministic pseudo-random tree spec: $1 = flat|rec, $2 = listed images.
gen_spec() {
  "$py" -c '
import random, sys
mode, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
alpha = "abcXYZ_-. 0123456789éßΩ中"
exts = [".jpg", ".JPG", ".jpeg", ".png", ".PNG", ".Jpeg"]
def name():
    return "".join(rng.choice(alpha) for _ in range(rng.randint(1, 9))).strip() or "x"
classes = ["."] if mode == "flat" else (
    [".", "cls%d" % 3, "Cls10", "cls2", "b/deep/er", "b", "é", "Ω/x", "中文", "a b", "_x", "z.jpg"]
    + ["c%03d" % i for i in range(30)])
dirs = {"/".join(c.split("/")[:i]) for c in classes for i in range(1, c.count("/") + 2)}
seen = set(dirs)
out = []
while len(seen) < n + len(dirs):
    d = rng.choice(classes)
    f = name() + rng.choice(exts)
    if f.startswith(".") and "." not in f.lstrip("."):
        continue
    p = f if d == "." else d + "/" + f
    if p in seen:
        continue
    seen.add(p)
    out.append(p)
while len(seen) < n + len(dirs) + 120:  # files that are not listed
    d = rng.choice(classes)
    f = name() + rng.choice([".txt", ".gif", ".jpg.bak", ".jpe", ".bmp"])
    p = f if d == "." else d + "/" + f
    if p not in seen:
        seen.add(p)
        out.append(p)
out += [".png", ".jpg", "..jpeg", "sub only/x.jpg" if mode == "flat" else "empty dir/"]
out += ["nothing/here.txt", "deep/a/b/c/d.png"]
if mode == "rec":
    out += ["zlink -> c001", "c002/linked.jpg -> ../c001/real.jpg", "c001/real.jpg"]
else:
    out += ["linked.png -> real.png", "real.png", "dirlink.jpg -> nothing"]
print("\n".join(out))
' "$1" "$2"
}

gen_spec flat 1000 | make_tree flat1000
gen_spec rec 1000 | make_tree rec1000
make_tree tree23 <"$repo/im2list/tests/golden/tree23.txt"
printf 'a.jpg\nb.jpg\nc/d.jpg\n' | make_tree tiny3

fails=0
# run_case NAME TREE PREFIX ARGS...  (PREFIX relative to each tool's working dir)
run_case() {
  local name=$1 tree=$2 prefix=$3
  shift 3
  local py_dir=$work/out/$name/py rs_dir=$work/out/$name/rs
  mkdir -p "$py_dir/lists" "$rs_dir/lists"
  local why=""
  (cd "$py_dir/lists" && "$py" "$im2rec_py" "$@" "$prefix" "../../../../trees/$tree" \
    >../stdout.txt 2>../stderr.txt) || why="im2rec.py failed: $(tail -1 "$py_dir/stderr.txt")"
  local code=0
  (cd "$rs_dir/lists" && "${LIST_TOOL:-$im2list}" "$@" "$prefix" "../../../../trees/$tree" \
    >../stdout.txt 2>../stderr.txt) || code=$?
  [[ -z $why && $code -ne 0 ]] && why="im2list exit code $code: $(tail -1 "$rs_dir/stderr.txt")"
  if [[ -z $why ]]; then
    local py_files rs_files
    py_files=$(cd "$py_dir" && find . -type f -not -name '*.txt' | sort)
    rs_files=$(cd "$rs_dir" && find . -type f -not -name '*.txt' -not -name '*.classes' | sort)
    if [[ $py_files != "$rs_files" ]]; then
      why="different files: im2rec.py [$(echo $py_files)] im2list [$(echo $rs_files)]"
    elif [[ -z $py_files ]]; then
      why="no lists written"
    else
      local f
      for f in $py_files; do
        cmp -s "$py_dir/$f" "$rs_dir/$f" || { why="$f differs"; break; }
      done
    fi
  fi
  if [[ -z $why ]] && ! cmp -s "$py_dir/stdout.txt" "$rs_dir/stderr.txt"; then
    why="im2list's stderr is not im2rec.py's stdout"
  fi
  if [[ -z $why ]]; then
    local classes
    classes=$(cd "$rs_dir" && find . -name '*.classes')
    if [[ -z $classes ]]; then
      why="no .classes file"
    elif [[ -s $py_dir/stdout.txt ]] &&
      ! cmp -s <(sed 's/ [0-9]*$//' "$py_dir/stdout.txt") "$rs_dir/$classes"; then
      why="$classes does not list im2rec.py's folders"
    fi
  fi
  local n
  n=$(cat "$py_dir"/lists/*.lst 2>/dev/null | wc -l || true)
  if [[ -z $why ]]; then
    echo "PASS $name ($n rows, $(ls "$py_dir/lists" | wc -l) lists)"
  else
    echo "FAIL $name: $why"
    fails=$((fails + 1))
  fi
}

run_case flat1000 flat1000 data --list
run_case flat1000_noshuffle flat1000 data --list --no-shuffle
run_case flat1000_split_chunks flat1000 data --list --train-ratio 0.9 --test-ratio 0.05 --chunks 3
run_case rec1000 rec1000 data --list --recursive
run_case rec1000_noshuffle rec1000 data --list --recursive --no-shuffle
run_case rec1000_split_82 rec1000 data --list --recursive --train-ratio 0.8 --test-ratio 0.2
run_case rec1000_split_72_chunks7 rec1000 data --list --recursive --train-ratio 0.7 --test-ratio 0.2 --chunks 7
run_case rec1000_ratio_029 rec1000 data --list --recursive --train-ratio 0.29
run_case rec1000_chunks3_te_ignored rec1000 data --list --recursive --chunks 3 --test-ratio 0.3
run_case rec1000_exts rec1000 data --list --recursive --exts .png .gif .JPG --
run_case rec1000_prefix_slash rec1000 sub/ --list --recursive --train-ratio 0.5
run_case tiny3_more_chunks_than_images tiny3 data --list --recursive --chunks 5
# `im2rec --list` (im2rec.py's list mode in our im2rec) gives the same lists.
LIST_TOOL=$im2rec run_case im2rec_list_rec1000_split_72_chunks7 rec1000 data --list --recursive --train-ratio 0.7 --test-ratio 0.2 --chunks 7
LIST_TOOL=$im2rec run_case im2rec_list_flat1000 flat1000 data --list
while IFS=$'\t' read -r case args; do
  [[ -z $case || $case == \#* ]] && continue
  # shellcheck disable=SC2086 # the arguments are meant to split
  run_case "tree23_$case" tree23 data $args
  if ((update)); then
    dest=$repo/im2list/tests/golden/tree23/$case
    rm -rf "$dest"
    mkdir -p "$dest"
    cp "$work/out/tree23_$case/py/lists/"*.lst "$dest/"
    cp "$work/out/tree23_$case/py/stdout.txt" "$dest/stdout.txt"
  fi
done <"$repo/im2list/tests/golden/tree23/cases.txt"

if ((fails)); then
  echo "$fails case(s) FAILED"
  exit 1
fi
echo "all cases PASS"
