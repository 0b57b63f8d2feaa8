# An independent check of std/convnext.cnn against torchvision's convnext_tiny (needs torch,
# torchvision, numpy, safetensors; not part of CI).
#
#   python3 tools/convnext_vs_torchvision.py /tmp/cvx          # writes weights, input, torch's output
#   cnnc run std/convnext.cnn --weights /tmp/cvx/w.safetensors --input /tmp/cvx/x.npy \
#        --output /tmp/cvx/jit.npy                              # and --backend reference → ref.npy
#   python3 tools/convnext_vs_torchvision.py /tmp/cvx compare
#
# The weights are torchvision's initialization (seed 0) with the layer scales, which start at
# 1e-6 and would hide every block, the biases (which start at 0) and the layer norms' affine
# maps made random, so that every layer shows in the output. The input is N(0, 1) noise,
# 1×224×224×3.
#
# Run on 2026-12-02 (torch 2.15, torchvision 0.29.2): the largest relative difference of the
# 1000 probabilities from torch's is 1.65e-6 for the JIT and 8.1e-7 for the reference
# interpreter; the top 5 are torch's.
import os, sys, numpy as np, torch, torchvision
from safetensors.torch import save_file
torch.set_num_threads(2)
out = sys.argv[1]
if len(sys.argv) == 2:
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.uniform_(0.2, 1.0)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.data.normal_(1.0, 0.2)
                module.bias.data.normal_(0.0, 0.1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/w.safetensors")
    x = torch.randn(1, 3, 224, 224)
    np.save(f"{out}/x.npy", x.permute(0, 2, 3, 1).numpy().astype(np.float32))
    with torch.no_grad():
        np.save(f"{out}/torch.npy", torch.softmax(model(x), 1).numpy())
else:
    expected = np.load(f"{out}/torch.npy").astype(np.float64)
    for backend in ["jit", "ref"]:
        path = f"{out}/{backend}.npy"
        if not os.path.exists(path):
            continue
        found = np.load(path).astype(np.float64).reshape(expected.shape)
        rel = np.abs(found - expected) / np.abs(expected)
        logit = np.abs(np.log(found) - np.log(expected))
        print(f"{backend}: max relative difference of the 1000 probabilities {rel.max():.2e}, "
              f"of the logits (as log-probabilities) {logit.max():.2e}; top-5 torch "
              f"{np.argsort(-expected[0])[:5].tolist()} cnnc {np.argsort(-found[0])[:5].tolist()}")
