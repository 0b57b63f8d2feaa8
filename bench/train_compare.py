"""cnnc training against PyTorch eager on this machine: LeNet-5 on the MNIST digits (epoch time
and test accuracy) and ResNet-18 / MobileNet v2 training steps (images/s), at 1 and 2 threads.
Run through bench/train_compare.sh, which makes the venv (torch, torchvision) and builds cnnc.

Method
------
LeNet-5: the same network, data and recipe on both sides — examples/lenet5_mnist.cnn (ReLU,
average pooling, logits + cross entropy), the 7,000 training digits of examples/data/mnist
zero-padded from 28x28 to 32x32, scaled to [0, 1] and normalized with MNIST's mean and std
(the example's `preprocess`), Adam (lr 1e-3, PyTorch's defaults),
batch 64, the last partial batch kept, shuffled every epoch. PyTorch's side is timed per epoch
(forward, backward, step, no data-loader threads: the digits are one in-memory tensor) and its
test accuracy is measured on the 1,000 test digits after the last epoch. cnnc's side is one
`cnnc train ... --json` call with the same epochs and threads; its per-epoch times and final
validation accuracy are read from the JSON object it prints. The runs alternate engine by
engine, thread count by thread count, so a slow drift of the shared host favours neither.

ResNet-18 / MobileNet v2: torchvision's models with 10 output classes, batch 16 at 224x224
(random inputs and labels), SGD with momentum 0.9, cross entropy; a step is forward, backward
and update. Reported: images/s from the median of the timed steps after 2 warm-up steps.
cnnc's side is `cnnc bench std/... --train --batch 16 --json` (the same recipe on its std
networks, which keep torchvision's 1,000 classes: 0.03 % more multiply-adds), run right after
PyTorch's at each thread count.

Quote only ratios measured in one run of this script: the host is shared and noisy.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def lenet5() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def mnist(root: str, split: str):
    images = np.load(os.path.join(root, f"{split}-images.npy"))
    labels = np.load(os.path.join(root, f"{split}-labels.npy")).astype(np.int64)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    x = (F.pad(x, (2, 2, 2, 2)) - 0.1307) / 0.3081
    return x.contiguous(), torch.from_numpy(labels)


def torch_lenet(root: str, epochs: int, threads: int, seed: int):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x, y = mnist(root, "train")
    xt, yt = mnist(root, "test")
    model = lenet5()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs):
        order = torch.randperm(len(x))
        start = time.perf_counter()
        model.train()
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        accuracy = (model(xt).argmax(1) == yt).float().mean().item()
    return times, accuracy


def cnnc_lenet(cnnc: str, root: str, repo: str, epochs: int, threads: int, seed: int):
    cmd = [
        cnnc, "train", os.path.join(repo, "examples/lenet5_mnist.cnn"),
        "--data", os.path.join(root, "train-images.npy"),
        "--val", os.path.join(root, "test-images.npy"),
        "--epochs", str(epochs), "--threads", str(threads), "--seed", str(seed),
        "--out", os.path.join(repo, "target", "train-compare.safetensors"),
        "--json",
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    times = [epoch["seconds"] for epoch in report["epochs"]]
    last = report["epochs"][-1].get("validation") or {}
    return times, last.get("accuracy")


def torch_steps(name: str, threads: int, steps: int):
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(16, 3, 224, 224)
    y = torch.randint(0, 10, (16,))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 16 / statistics.median(times)


def cnnc_steps(cnnc: str, repo: str, file: str, net: str, threads: int, steps: int):
    cmd = [
        cnnc, "bench", os.path.join(repo, file), "--net", net, "--train", "--batch", "16",
        "--threads", str(threads), "--runs", str(steps), "--warmup", "2", "--json",
    ]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cnnc", required=True)
    parser.add_argument("--root", required=True, help="the repository")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per network")
    parser.add_argument("--no-steps", action="store_true", help="skip ResNet-18 / MobileNet v2")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    data = os.path.join(args.root, "examples/data/mnist")

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    print("\n## LeNet-5 on 7,000 MNIST digits, batch 64, Adam 1e-3\n")
    print("| threads | PyTorch s/epoch | cnnc s/epoch | cnnc/PyTorch | PyTorch acc | cnnc acc |")
    print("|---:|---:|---:|---:|---:|---:|")
    for threads in (1, 2):
        t_times, t_acc = torch_lenet(data, args.epochs, threads, args.seed)
        c_times, c_acc = cnnc_lenet(args.cnnc, data, args.root, args.epochs, threads, args.seed)
        t_med = statistics.median(t_times)
        c_med = statistics.median(c_times) if c_times else float("nan")
        c_acc_s = f"{c_acc:.4f}" if c_acc is not None else "-"
        print(f"| {threads} | {t_med:.2f} | {c_med:.2f} | {c_med / t_med:.2f} | "
              f"{t_acc:.4f} | {c_acc_s} |")
        sys.stdout.flush()

    if args.no_steps:
        return
    print("\n## Training step, batch 16 at 224x224, SGD momentum 0.9\n")
    print("| network | threads | PyTorch images/s | cnnc images/s | cnnc/PyTorch speed | cnnc gradients |")
    print("|---|---:|---:|---:|---:|---|")
    files = {"resnet18": "std/resnet.cnn", "mobilenet_v2": "std/mobilenet.cnn"}
    for name in ("resnet18", "mobilenet_v2"):
        for threads in (1, 2):
            rate = torch_steps(name, threads, args.steps)
            ours = cnnc_steps(args.cnnc, args.root, files[name], name, threads, args.steps)
            print(f"| {name} | {threads} | {rate:.1f} | {ours['images_per_s']:.1f} | "
                  f"{ours['images_per_s'] / rate:.2f} | {ours['backend']} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
