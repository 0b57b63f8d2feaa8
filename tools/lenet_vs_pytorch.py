# An independent check of `cnnc train` against PyTorch (needs torch, numpy, safetensors).
#
#   cnnc weights examples/lenet5_mnist.cnn --seed 1 --out /tmp/tc/init.safetensors
#   cnnc train examples/lenet5_mnist.cnn --data examples/data/mnist/train-images.npy \
#        --val examples/data/mnist/test-images.npy --weights /tmp/tc/init.safetensors \
#        --no-shuffle --epochs 2 --threads 1 --out /tmp/tc/cnnc_ep2.safetensors
#   python3 tools/lenet_vs_pytorch.py same 2 /tmp/tc/cnnc_ep2.safetensors
#        the same network, initial weights, data order and recipe (Adam 1e-3, batch 64) in
#        PyTorch: each epoch's mean loss and test accuracy, and the largest weight difference
#        (Adam turns rounding differences of near-zero gradients into full-size steps, so the
#        weights drift apart while the losses agree)
#   python3 tools/lenet_vs_pytorch.py seeds 5
#        PyTorch's own initialization and shuffling: test accuracy after 10 epochs per seed
#
# Run on 2026-12-02: cnnc 0.9674 / 0.3081, PyTorch 0.9674 /
# 0.3082 (epochs 1, 2), test 88.6 / 91.2 % vs 88.6 / 91.3 %; PyTorch seeds 0–4: 96.4, 96.3,
# 95.6, 95.7, 95.4 %.
import os, sys, json, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from safetensors.torch import load_file
torch.set_num_threads(1)
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples/data/mnist/")
def load(split):
    x = np.load(root + f"{split}-images.npy").astype(np.float32) / 255.0   # N,28,28,1
    y = np.load(root + f"{split}-labels.npy").astype(np.int64)
    x = np.pad(x, ((0,0),(2,2),(2,2),(0,0)))
    x = (x - 0.1307) / 0.3081
    return torch.tensor(x).permute(0,3,1,2).contiguous(), torch.tensor(y)
class LeNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv1 = nn.Conv2d(1,6,5); s.conv2 = nn.Conv2d(6,16,5)
        s.fc1 = nn.Linear(400,120); s.fc2 = nn.Linear(120,84); s.fc3 = nn.Linear(84,10)
    def forward(s, x):
        x = F.avg_pool2d(F.relu(s.conv1(x)), 2); x = F.avg_pool2d(F.relu(s.conv2(x)), 2)
        x = torch.flatten(x, 1); x = F.relu(s.fc1(x)); x = F.relu(s.fc2(x)); return s.fc3(x)
xtr, ytr = load("train"); xte, yte = load("test")
def test_acc(m):
    with torch.no_grad(): return (m(xte).argmax(1) == yte).float().mean().item()
mode = sys.argv[1]
if mode == "same":   # cnnc's init, no shuffle, epochs given
    epochs = int(sys.argv[2])
    m = LeNet(); m.load_state_dict(load_file("/tmp/tc/init.safetensors"))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for e in range(epochs):
        tot = 0.0
        for i in range(0, len(ytr), 64):
            xb, yb = xtr[i:i+64], ytr[i:i+64]
            opt.zero_grad(); loss = F.cross_entropy(m(xb), yb); loss.backward(); opt.step()
            tot += loss.item() * len(yb)
        print(f"torch epoch {e+1} loss {tot/len(ytr):.6f} test {test_acc(m):.4f}")
    theirs = load_file(sys.argv[3])
    diff = max((m.state_dict()[k] - theirs[k]).abs().max().item() for k in m.state_dict())
    print(f"max |torch - cnnc| over all weights after {epochs} epoch(s): {diff:.3e}")
else:                # PyTorch's own init and shuffling, several seeds
    for seed in range(int(sys.argv[2])):
        torch.manual_seed(seed); m = LeNet(); opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        for e in range(10):
            perm = torch.randperm(len(ytr))
            for i in range(0, len(ytr), 64):
                idx = perm[i:i+64]
                opt.zero_grad(); F.cross_entropy(m(xtr[idx]), ytr[idx]).backward(); opt.step()
        print(f"torch seed {seed}: test accuracy after 10 epochs {test_acc(m):.4f}")
