#!/usr/bin/env python3
"""PyTorch CPU reference for bench/run.ts: time forward+backward+Adam steps of one model.

Usage: python3 torch_step.py MODEL SIZE BATCH STEPS WARMUP THREADS
MODEL: densenet169 | resnet50 | smallcnn. Prints one JSON line:
{"model", "size", "batch", "threads", "stepsMs": [...], "medianMs", "torch"}.
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
    name, size, batch, steps, warmup, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        float(loss)
        dt = (time.perf_counter() - t0) * 1000
        if i >= warmup:
            times.append(dt)
    print(json.dumps({"model": name, "size": size, "batch": batch, "threads": torch.get_num_threads(),
                      "stepsMs": times, "medianMs": statistics.median(times), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
