"""cnnc against onnxruntime on the standard networks: numerical agreement, latency, compile
time, memory. Run through bench/compare.sh, which makes the venv and builds cnnc.

Method
------
For each network:

1. Oracle. `cnnc weights` writes the seeded weights (seed 0, what `cnnc run` uses); with
   PyTorch's default initialization a deep network's output is nearly softmax(last bias)
   whatever the input, so agreeing on it would prove little. The script therefore scales every
   conv and dense weight by one gain, found by bisection between 1 and 4 on ORT alone, at
   which the log-probabilities' standard deviation is just under 2 (the signal grows about as
   gain^depth: He's sqrt(6) keeps a plain ReLU network's, squeeze-and-excitation gates of
   about 0.5 lose more, residual sums gain), and gives each batch norm random statistics;
   then `cnnc export --weights` writes that network as ONNX. One synthetic input (uniform in
   [-1, 1), numpy seed 0) goes through onnxruntime (NCHW) and through `cnnc run --weights
   --input x.npy --output y.npy` (NHWC, the JIT with the optimizer's folding and fusion).
   The largest element-wise relative difference of the output probabilities is printed with
   the gain and the spread; above 1e-4 the network is marked FAIL. onnxruntime shares no code
   with cnnc, so this checks the JIT independently of cnnc's own reference interpreter.

2. Latency, interleaved. In each of R rounds, four measurements alternate: ORT 1 thread, cnnc
   1 thread, ORT 2 threads, cnnc 2 threads (the order is reversed every other round, so a slow
   drift of the machine does not favour either side). A cnnc measurement is one
   `cnnc bench FILE --net N --threads T --runs K --json` call (compile, 3 warm-up runs, K
   timed runs; it reports the median, the compile time and the process's peak RSS); an ORT
   measurement is K timed `session.run` calls after 3 warm-up calls, in this process, on a
   session with `intra_op_num_threads = T`, sequential execution. K is chosen so that one
   measurement takes about --seconds (from a first ORT run). Reported: the best (smallest)
   median over the rounds for each engine and thread count, and the median over rounds of
   the paired ratios cnnc/ORT and 1t/2t, each computed within one round. The host is shared
   and noisy; only ratios measured in one run are meaningful, and the paired ratios are the
   figures to quote.

3. Compile time: cnnc's `compile_ms` (source to native code, weights packed; best over the
   rounds) against onnxruntime's session creation (default graph optimizations, best of R).

3b. Throughput (--batch B, default 8; 1 turns it off). The same rounds also alternate, call
   by call with the latency measurements above, ORT and cnnc at batch B (1 and 2 threads):
   one `cnnc bench --batch B` call against K' `session.run` calls on a B-image input (the
   exported model's batch dimension is symbolic). Reported: images/s (B over the best median
   of a batch) and the paired ratio cnnc/ORT of the time per batch, which is ORT's images/s
   over cnnc's (below 1: cnnc serves more images per second). Before timing, the oracle check
   of step 1 is repeated on a batch of B different images, which checks the JIT's batch
   paths (images shared out over threads) against ORT as well.

4. Peak RSS: cnnc's is the `cnnc bench` process's VmHWM (largest over the 1-thread calls);
   ORT's is measured in a child Python process that imports onnxruntime, creates the session
   and runs it 3 times: its VmHWM, and in brackets what it grew by after the imports (the
   interpreter, numpy and onnxruntime's library take ~30-40 MiB by themselves).

5. Example files (--file PATH, repeatable; implies --check-only): every network of the file,
   with the seeded weights perturbed (each tensor scaled elementwise by a factor in [0.5, 1.5],
   1-D tensors shifted by up to ±0.1, batch norms given random statistics) so that affine
   parameters that start at 1 and 0 do real work, exported as ONNX; inputs uniform in [-1, 1)
   at batch 1 and 3 through `cnnc run` (JIT on 2 threads, and the reference interpreter) and
   onnxruntime. These outputs are not probabilities, so the error printed is the largest
   difference over the largest magnitude of ORT's output (above 1e-4: FAIL). bench/ort_ops.cnn
   holds the ops the tests check only structurally in ONNX (prelu, groupnorm, instancenorm,
   conv_transpose, the padding modes, upsample, layernorm).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

NETWORKS = {
    "lenet5": "std/lenet.cnn",
    "resnet18": "std/resnet.cnn",
    "resnet50": "std/resnet.cnn",
    "googlenet": "std/googlenet.cnn",
    "mobilenet_v1": "std/mobilenet.cnn",
    "mobilenet_v2": "std/mobilenet.cnn",
    "efficientnet_b0": "std/efficientnet.cnn",
    "alexnet": "std/alexnet.cnn",
    "vgg16": "std/vgg.cnn",
}
TOLERANCE = 1e-4
# The oracle's weights: conv and dense weights scaled by a gain in [1, MAX_GAIN] chosen so that
# the log-probabilities' standard deviation is at most SPREAD (BISECTIONS steps).
MAX_GAIN = 4.0
SPREAD = 2.0
BISECTIONS = 6
WARMUP = 3
MIB = 1 << 20


def session(path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ort_median_ms(sess, feed, runs):
    for _ in range(WARMUP):
        sess.run(None, feed)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def cnnc_bench(cnnc, file, net, threads, runs, root, batch=1):
    out = subprocess.run(
        [cnnc, "bench", file, "--net", net, "--threads", str(threads),
         "--runs", str(runs), "--warmup", str(WARMUP), "--batch", str(batch), "--json"],
        check=True, capture_output=True, text=True, cwd=root)
    return json.loads(out.stdout)


# Runs in a child process: the peak RSS of onnxruntime serving one network.
ORT_RSS_CHILD = r"""
import sys
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import numpy as np, onnxruntime as ort
base = rss("VmRSS:")
options = ort.SessionOptions()
options.intra_op_num_threads = int(sys.argv[2])
sess = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
x = np.load(sys.argv[3])
for _ in range(3):
    sess.run(None, {sess.get_inputs()[0].name: x})
print(rss("VmHWM:"), base)
"""


def ort_peak_rss(path, threads, x_path):
    out = subprocess.run([sys.executable, "-c", ORT_RSS_CHILD, path, str(threads), x_path],
                         check=True, capture_output=True, text=True)
    peak, base = (int(v) for v in out.stdout.split())
    return peak, base


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: `{name}` is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[begin:end], dtype="<f4").reshape(info["shape"])
    return tensors


def write_safetensors(path, tensors):
    header, offset, chunks = {}, 0, []
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)


def weights_with_signal(seeded, gain, rng):
    """The seeded weights with conv and dense weights scaled by `gain` and every batch norm
    given random statistics. PyTorch's default initialization (what cnnc seeds) shrinks the
    signal layer after layer, so a deep network's output is softmax(last bias) whatever the
    input, and agreeing on it proves little; He-like scaling keeps the signal alive, and the
    statistics make the optimizer's batch-norm folding do real work."""
    out = {}
    batch_norms = {name[:-len(".running_mean")] for name in seeded if name.endswith(".running_mean")}
    for name, array in seeded.items():
        prefix, _, suffix = name.rpartition(".")
        if prefix in batch_norms:
            low, high = {"weight": (0.5, 1.5), "bias": (-0.1, 0.1), "running_mean": (-0.1, 0.1),
                         "running_var": (0.5, 2.0)}[suffix]
            out[name] = rng.uniform(low, high, size=array.shape).astype(np.float32)
        elif suffix == "weight" and array.ndim in (2, 4):
            out[name] = (array * gain).astype(np.float32)
        else:
            out[name] = array
    return out


def oracle_weights(cnnc, file, net, x_nchw, workdir, root):
    """A weights file whose outputs carry signal: the gain, found by bisection between 1 and
    MAX_GAIN on ORT alone, at which the log-probabilities' standard deviation is just below
    SPREAD. Returns the weights file, its ONNX model, the gain and the spread."""
    seeded_path = os.path.join(workdir, f"{net}.seeded.safetensors")
    subprocess.run([cnnc, "weights", file, "--net", net, "--out", seeded_path],
                   check=True, capture_output=True, cwd=root)
    seeded = read_safetensors(seeded_path)
    path = os.path.join(workdir, f"{net}.oracle.safetensors")
    onnx_path = os.path.join(workdir, f"{net}.oracle.onnx")

    def spread_at(gain):
        write_safetensors(path, weights_with_signal(seeded, gain, np.random.default_rng(1)))
        subprocess.run([cnnc, "export", file, "--net", net, "--weights", path, "--onnx", onnx_path],
                       check=True, capture_output=True, cwd=root)
        sess = session(onnx_path, 1)
        p = sess.run(None, {sess.get_inputs()[0].name: x_nchw})[0].astype(np.float64)
        if not np.all(np.isfinite(p)):
            return float("inf")
        return float(np.std(np.log(np.maximum(p, 1e-300))))

    # The spread grows with the gain roughly as gain^depth, so bisect on its logarithm.
    low, high = 1.0, MAX_GAIN
    for _ in range(BISECTIONS):
        middle = (low * high) ** 0.5
        if spread_at(middle) <= SPREAD:
            low = middle
        else:
            high = middle
    return path, onnx_path, low, spread_at(low)


def check_against_ort(cnnc, file, net, weights, onnx_path, x_nchw, workdir, root):
    """The largest relative and absolute differences between cnnc run and ORT."""
    nhwc = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)) if x_nchw.ndim == 4 else x_nchw
    x_path = os.path.join(workdir, f"{net}.x.npy")
    y_path = os.path.join(workdir, f"{net}.y.npy")
    np.save(x_path, nhwc)
    subprocess.run([cnnc, "run", file, "--net", net, "--weights", weights, "--input", x_path,
                    "--output", y_path], check=True, capture_output=True, cwd=root)
    found = np.load(y_path).astype(np.float64)
    sess = session(onnx_path, 1)
    expected = sess.run(None, {sess.get_inputs()[0].name: x_nchw})[0].astype(np.float64)
    if expected.ndim == 4:
        expected = expected.transpose(0, 2, 3, 1)
    if found.shape != expected.shape:
        raise SystemExit(f"{net}: cnnc gives {found.shape}, onnxruntime {expected.shape}")
    diff = np.abs(found - expected)
    relative = float(np.max(diff / np.maximum(np.abs(expected), 1e-30)))
    return relative, float(np.max(diff))


def file_weights(seeded, rng):
    """The seeded weights perturbed so that every tensor matters (see the header, step 5)."""
    out = {}
    batch_norms = {name[:-len(".running_mean")] for name in seeded if name.endswith(".running_mean")}
    for name, array in seeded.items():
        prefix, _, suffix = name.rpartition(".")
        if prefix in batch_norms:
            low, high = {"weight": (0.5, 1.5), "bias": (-0.1, 0.1), "running_mean": (-0.1, 0.1),
                         "running_var": (0.5, 2.0)}[suffix]
            out[name] = rng.uniform(low, high, size=array.shape).astype(np.float32)
            continue
        scaled = array * rng.uniform(0.5, 1.5, size=array.shape)
        if array.ndim == 1:
            scaled = scaled + rng.uniform(-0.1, 0.1, size=array.shape)
        out[name] = scaled.astype(np.float32)
    return out


def check_file(cnnc, file, root, workdir):
    """Every network of `file` against onnxruntime; returns one row per network."""
    listing = subprocess.run([cnnc, "check", file, "--json"], check=True, capture_output=True,
                             text=True, cwd=root)
    rows = []
    for entry in json.loads(listing.stdout):
        net = entry["network"]
        seeded_path = os.path.join(workdir, f"{net}.seeded.safetensors")
        subprocess.run([cnnc, "weights", file, "--net", net, "--out", seeded_path],
                       check=True, capture_output=True, cwd=root)
        weights = os.path.join(workdir, f"{net}.perturbed.safetensors")
        write_safetensors(weights, file_weights(read_safetensors(seeded_path),
                                                np.random.default_rng(3)))
        onnx_path = os.path.join(workdir, f"{net}.onnx")
        subprocess.run([cnnc, "export", file, "--net", net, "--weights", weights, "--onnx",
                        onnx_path], check=True, capture_output=True, cwd=root)
        sess = session(onnx_path, 1)
        worst = 0.0
        for batch in (1, 3):
            shape = [batch] + list(sess.get_inputs()[0].shape[1:])
            x = np.random.default_rng(batch).uniform(-1, 1, size=shape).astype(np.float32)
            expected = sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float64)
            if expected.ndim == 4:
                expected = expected.transpose(0, 2, 3, 1)
            x_path = os.path.join(workdir, f"{net}.x.npy")
            y_path = os.path.join(workdir, f"{net}.y.npy")
            np.save(x_path, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
            for backend in (["--backend", "jit", "--threads", "2"], ["--backend", "reference"]):
                subprocess.run([cnnc, "run", file, "--net", net, "--weights", weights, "--input",
                                x_path, "--output", y_path] + backend,
                               check=True, capture_output=True, cwd=root)
                found = np.load(y_path).astype(np.float64)
                if found.shape != expected.shape:
                    raise SystemExit(f"{net}: cnnc gives {found.shape}, onnxruntime "
                                     f"{expected.shape}")
                error = float(np.max(np.abs(found - expected)) / max(np.max(np.abs(expected)),
                                                                     1e-30))
                worst = max(worst, error)
                print(f"{file} {net} batch {batch} {backend[1]}: max difference / max |ORT| "
                      f"{error:.2e}", flush=True)
        verdict = "ok" if worst <= TOLERANCE else "FAIL"
        print(f"{file} {net}: worst {worst:.2e}: {verdict}", flush=True)
        rows.append({"net": f"{file}:{net}", "rel": worst})
    return rows


def measure(args, net, root, workdir):
    file = NETWORKS[net]
    onnx_path = os.path.join(workdir, f"{net}.onnx")
    subprocess.run([args.cnnc, "export", file, "--net", net, "--onnx", onnx_path],
                   check=True, capture_output=True, cwd=root)
    probe = session(onnx_path, 1)
    shape = [1] + list(probe.get_inputs()[0].shape[1:])
    x = np.random.default_rng(0).uniform(-1, 1, size=shape).astype(np.float32)
    weights, oracle_onnx, gain, spread = oracle_weights(args.cnnc, file, net, x, workdir, root)
    relative, absolute = check_against_ort(args.cnnc, file, net, weights, oracle_onnx, x, workdir,
                                           root)
    verdict = "ok" if relative <= TOLERANCE else "FAIL"
    print(f"{net}: max relative error {relative:.2e} (max abs {absolute:.2e}) vs onnxruntime: "
          f"{verdict} (weights x{gain:.2f}, std of log-probabilities {spread:.2f})", flush=True)
    batch = args.batch
    x_batch = None
    if batch > 1:
        x_batch = np.random.default_rng(2).uniform(-1, 1, size=[batch] + shape[1:]).astype(
            np.float32)
        relative_b, absolute_b = check_against_ort(args.cnnc, file, net, weights, oracle_onnx,
                                                   x_batch, workdir, root)
        verdict = "ok" if relative_b <= TOLERANCE else "FAIL"
        print(f"{net}: batch {batch}: max relative error {relative_b:.2e} "
              f"(max abs {absolute_b:.2e}) vs onnxruntime: {verdict}", flush=True)
        relative = max(relative, relative_b)
        absolute = max(absolute, absolute_b)
    if args.check_only:
        return {"net": net, "rel": relative, "abs": absolute}

    feed_name = probe.get_inputs()[0].name
    feed = {feed_name: x}
    first_ms = ort_median_ms(probe, feed, 3)
    runs = max(5, min(500, int(args.seconds * 1e3 / max(first_ms, 1e-3))))
    if batch > 1:
        feed_batch = {feed_name: x_batch}
        first_batch_ms = ort_median_ms(probe, feed_batch, 1)
        runs_batch = max(3, min(500, int(args.seconds * 1e3 / max(first_batch_ms, 1e-3))))
    del probe

    sessions, create_ms = {}, []
    for _ in range(args.rounds):
        start = time.perf_counter()
        fresh = session(onnx_path, 1)
        create_ms.append((time.perf_counter() - start) * 1e3)
        del fresh
    for threads in args.threads:
        sessions[threads] = session(onnx_path, threads)

    ort_ms = {t: [] for t in args.threads}
    cnnc_ms = {t: [] for t in args.threads}
    ort_batch_ms = {t: [] for t in args.threads}
    cnnc_batch_ms = {t: [] for t in args.threads}
    compile_ms, cnnc_rss, weight_bytes = [], [], 0
    for round_idx in range(args.rounds):
        steps = [(engine, t) for t in args.threads for engine in ("ort", "cnnc")]
        if batch > 1:
            steps += [(engine, t) for t in args.threads for engine in ("ort-batch", "cnnc-batch")]
        if round_idx % 2 == 1:
            steps.reverse()
        for engine, threads in steps:
            if engine == "ort":
                ort_ms[threads].append(ort_median_ms(sessions[threads], feed, runs))
            elif engine == "ort-batch":
                ort_batch_ms[threads].append(
                    ort_median_ms(sessions[threads], feed_batch, runs_batch))
            elif engine == "cnnc-batch":
                report = cnnc_bench(args.cnnc, file, net, threads, runs_batch, root, batch)
                cnnc_batch_ms[threads].append(report["median_ms"])
            else:
                report = cnnc_bench(args.cnnc, file, net, threads, runs, root)
                cnnc_ms[threads].append(report["median_ms"])
                compile_ms.append(report["compile_ms"])
                weight_bytes = report["weight_bytes"]
                if threads == args.threads[0] and report.get("peak_rss_bytes"):
                    cnnc_rss.append(report["peak_rss_bytes"])
    x_path = os.path.join(workdir, f"{net}.nchw.npy")
    np.save(x_path, x)
    ort_rss, ort_base = ort_peak_rss(onnx_path, args.threads[0], x_path)
    row = {"net": net, "rel": relative, "abs": absolute, "runs": runs,
           "compile_ms": min(compile_ms), "session_ms": min(create_ms),
           "cnnc_rss": max(cnnc_rss) if cnnc_rss else None, "weights": weight_bytes,
           "ort_rss": ort_rss, "ort_rss_growth": ort_rss - ort_base}
    for t in args.threads:
        row[f"ort{t}"] = min(ort_ms[t])
        row[f"cnnc{t}"] = min(cnnc_ms[t])
        row[f"ratio{t}"] = statistics.median(c / o for c, o in zip(cnnc_ms[t], ort_ms[t]))
    if len(args.threads) == 2:
        one, two = args.threads
        row["cnnc_speedup"] = statistics.median(a / b for a, b in zip(cnnc_ms[one], cnnc_ms[two]))
        row["ort_speedup"] = statistics.median(a / b for a, b in zip(ort_ms[one], ort_ms[two]))
    if batch > 1:
        row["batch"] = batch
        for t in args.threads:
            row[f"ort_ips{t}"] = batch / (min(ort_batch_ms[t]) * 1e-3)
            row[f"cnnc_ips{t}"] = batch / (min(cnnc_batch_ms[t]) * 1e-3)
            row[f"batch_ratio{t}"] = statistics.median(
                c / o for c, o in zip(cnnc_batch_ms[t], ort_batch_ms[t]))
        if len(args.threads) == 2:
            one, two = args.threads
            row["cnnc_batch_speedup"] = statistics.median(
                a / b for a, b in zip(cnnc_batch_ms[one], cnnc_batch_ms[two]))
            row["ort_batch_speedup"] = statistics.median(
                a / b for a, b in zip(ort_batch_ms[one], ort_batch_ms[two]))
    print(json.dumps(row), flush=True)
    return row


def ms(value):
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def table(rows, threads):
    head = ["network"]
    for t in threads:
        head += [f"ORT {t}t ms", f"cnnc {t}t", "ratio"]
    if len(threads) == 2:
        head.append(f"cnnc {threads[1]}t speed-up (ORT's)")
    head += ["cnnc compile (ORT session)", "peak RSS cnnc / weights", "peak RSS ORT (growth)",
             "max rel err vs ORT"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["net"]]
        for t in threads:
            cells += [ms(r[f"ort{t}"]), ms(r[f"cnnc{t}"]), f"{r[f'ratio{t}']:.2f}"]
        if len(threads) == 2:
            cells.append(f"{r['cnnc_speedup']:.2f} ({r['ort_speedup']:.2f})")
        cells.append(f"{r['compile_ms']:.0f} ms ({r['session_ms']:.0f})")
        rss = f"{r['cnnc_rss'] / MIB:.0f}" if r["cnnc_rss"] else "?"
        weights = r["weights"] / MIB
        cells.append(f"{rss} / {weights:.1f} MiB" if weights < 10 else f"{rss} / {weights:.0f} MiB")
        cells.append(f"{r['ort_rss'] / MIB:.0f} ({r['ort_rss_growth'] / MIB:.0f}) MiB")
        cells.append(f"{r['rel']:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput_table(rows, threads):
    """Images per second at the batch, and the paired time ratios cnnc/ORT."""
    rows = [r for r in rows if "batch" in r]
    if not rows:
        return ""
    head = ["network"]
    for t in threads:
        head += [f"ORT {t}t img/s", f"cnnc {t}t img/s", "ratio"]
    if len(threads) == 2:
        head.append(f"cnnc {threads[1]}t speed-up (ORT's)")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["net"]]
        for t in threads:
            cells += [f"{r[f'ort_ips{t}']:.1f}", f"{r[f'cnnc_ips{t}']:.1f}",
                      f"{r[f'batch_ratio{t}']:.2f}"]
        if len(threads) == 2:
            cells.append(f"{r['cnnc_batch_speedup']:.2f} ({r['ort_batch_speedup']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine():
    model = "unknown CPU"
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        pass
    simd = [f for f in ("avx512f", "avx2", "fma") if f" {f}" in flags]
    return f"{model}, {os.cpu_count()} CPUs, {'+'.join(simd) or 'no AVX'}, {platform.system()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cnnc", required=True, help="the cnnc binary (a release build)")
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--nets", default=",".join(NETWORKS),
                        help="comma-separated, from: " + ", ".join(NETWORKS))
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best median of these)")
    parser.add_argument("--seconds", type=float, default=1.0, help="target length of one measurement")
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--batch", type=int, default=8,
                        help="batch of the throughput measurements (1: none)")
    parser.add_argument("--check-only", action="store_true", help="only the numerical check")
    parser.add_argument("--out", help="the markdown file (default: bench/results-<date>.md)")
    parser.add_argument("--file", action="append", default=[],
                        help="check every network of this .cnn file against ORT (step 5 of the "
                             "header; repeatable; only the numerical check)")
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in nets if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown network(s) {', '.join(unknown)}; known: {', '.join(NETWORKS)}")

    if args.file:
        rows = []
        with tempfile.TemporaryDirectory(prefix="cnnc-compare-") as workdir:
            for file in args.file:
                rows.extend(check_file(args.cnnc, file, args.root, workdir))
        failed = [r["net"] for r in rows if r["rel"] > TOLERANCE]
        if failed:
            print("FAILED: " + ", ".join(failed))
        return 1 if failed else 0

    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnc-compare-") as workdir:
        for net in nets:
            rows.append(measure(args, net, args.root, workdir))
    failed = [r["net"] for r in rows if r["rel"] > TOLERANCE]
    if args.check_only:
        return 1 if failed else 0

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=args.root).stdout.strip() or "unknown"
    today = datetime.date.today().isoformat()
    text = "\n".join([
        f"# cnnc vs onnxruntime, {today}",
        "",
        f"Machine: {machine()}. onnxruntime {ort.__version__} (CPU provider), cnnc {commit} "
        f"(release build). Batch 1, best median of {args.rounds} interleaved rounds, ms; "
        "ratios are cnnc/ORT paired within a round (median over rounds). "
        "Generated by `bench/compare.sh`; its header (bench/compare.py) says how each figure is "
        "measured. The host is shared and noisy: quote ratios from one run, not absolute times. "
        f"Load average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
        f"end, on {os.cpu_count()} CPUs: a load above 0 means other processes competed.",
        "",
        table(rows, args.threads),
        "",
    ] + ([
        f"Throughput at batch {args.batch}: images/s from the best median of a batch over the "
        "same rounds; ratio = cnnc/ORT time per batch, paired within a round (median over "
        "rounds), i.e. ORT's images/s over cnnc's.",
        "",
        throughput_table(rows, args.threads),
        "",
    ] if args.batch > 1 else []) + [
        f"Numerical agreement: output probabilities of `cnnc run` vs onnxruntime on one input, "
        f"tolerance {TOLERANCE:g} relative; "
        + ("all within it." if not failed else f"FAILED: {', '.join(failed)}."),
        "",
    ])
    out = args.out or os.path.join(args.root, "bench", f"results-{today}.md")
    with open(out, "w") as f:
        f.write(text)
    print()
    print(text)
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
