#!/usr/bin/env python3
# PyTorch eager reference for scripts/gpu/gpu_run.sh (the same code as ../shared/bench/torch_baseline.py,
# with ResNet-18 inference and a machine-readable line per measurement):
#   TORCH <train|infer> <resnet18|resnet50> <batch> <fp32|amp> <img/s>
# fp32 = float32 with TF32 convolutions (PyTorch's default); amp = autocast bfloat16 + channels_last.
import sys, time, torch, torchvision
torch.backends.cudnn.benchmark = True
dev = "cuda"

def train(name, batch, amp, steps=20, warm=5):
    m = getattr(torchvision.models, name)(num_classes=1000).to(dev)
    x = torch.randn(batch, 3, 224, 224, device=dev); y = torch.randint(0, 1000, (batch,), device=dev)
    if amp: m = m.to(memory_format=torch.channels_last); x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    lossf = torch.nn.CrossEntropyLoss()
    for i in range(warm + steps):
        if i == warm: torch.cuda.synchronize(); t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = lossf(m(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    torch.cuda.synchronize(); dt = time.perf_counter() - t
    print(f"TORCH train {name} {batch} {'amp' if amp else 'fp32'} {batch*steps/dt:.0f}", flush=True)

def infer(name, batch, amp, steps=30, warm=5):
    m = getattr(torchvision.models, name)(num_classes=1000).to(dev).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for i in range(warm + steps):
            if i == warm: torch.cuda.synchronize(); t = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp): m(x)
    torch.cuda.synchronize(); dt = time.perf_counter() - t
    print(f"TORCH infer {name} {batch} {'amp' if amp else 'fp32'} {batch*steps/dt:.0f}", flush=True)

print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(0), file=sys.stderr, flush=True)
for amp in (False, True):
    train("resnet18", 256, amp); train("resnet50", 128, amp)
    infer("resnet18", 256, amp); infer("resnet50", 256, amp)
