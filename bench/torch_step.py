#!/usr/bin/env python3
"""PyTorch reference for bench/run.ts (CPU) and bench/gpu/check.ts (CUDA): time
forward+backward+Adam steps of one model.

Usage: python3 torch_step.py MODEL SIZE BATCH STEPS WARMUP THREADS [--device cpu|cuda] [--tf32]
MODEL: densenet169 | resnet50 | smallcnn. Prints one JSON line:
{"model", "size", "batch", "threads", "stepsMs": [...], "medianMs", "torch", "device", "gpu", "tf32"}.
--device cuda (default cpu): model and batch on the GPU, torch.cuda.synchronize() closes every
timed step, cudnn.benchmark on. float32 throughout unless --tf32 (TensorFloat-32 convolutions
and matmuls, PyTorch's default for cuDNN convolutions): off by default so that the comparison
with WebGPU's float32 kernels is like for like.
torchvision's densenet169 matches Keras DenseNet-169; its resnet50 is v1.5 (stride on the 3x3
conv, ~4.1 vs ~3.9 GFLOP at 224^2 for Keras v1); flops are counted per side by bench/run.ts.
"""
import json
import statistics
import sys
import time

import torch
import torch.nn as nn


def small_cnn(num_classes=2):
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes),
    )


def build(name):
    if name == "smallcnn":
        return small_cnn()
    import torchvision
    return getattr(torchvision.models, name)(num_classes=2)


def main():
    argv = sys.argv[1:]
    device = "cpu"
    tf32 = "--tf32" in argv
    if "--device" in argv:
        i = argv.index("--device")
        device = argv[i + 1]
        del argv[i:i + 2]
    argv = [a for a in argv if a != "--tf32"]
    name, size, batch, steps, warmup, threads = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5])
    if device not in ("cpu", "cuda"):
        sys.exit(f"torch_step.py: --device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_step.py: --device cuda, but torch.cuda.is_available() is False")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = build(name).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        float(loss)
        sync()
        dt = (time.perf_counter() - t0) * 1000
        if i >= warmup:
            times.append(dt)
    print(json.dumps({"model": name, "size": size, "batch": batch, "threads": torch.get_num_threads(),
                      "stepsMs": times, "medianMs": statistics.median(times), "torch": torch.__version__,
                      "device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
                      "tf32": tf32 if device == "cuda" else False}))


if __name__ == "__main__":
    main()
