"""What the table scripts of BENCHMARKS.md share (tools/compress_table.py, tools/quant_table.py):
the shared model, its text split as it was trained (train = the first 90% of the text, held-out =
the last len//10 bytes), calibration statistics from 32768 training tokens, and running structmat.
"""
import os
import subprocess
import sys

MODEL = "models/shakespeare-llama-3m"
TEXT = "data/tinyshakespeare.txt"


def run(cmd):
    """stdout of cmd; its stderr and exit on failure."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(" ".join(cmd) + "\n" + r.stderr)
        raise SystemExit(1)
    return r.stdout


def prepare(sm, work, model=MODEL):
    """Writes WORK/train.txt and WORK/val.txt, and WORK/s.calib unless it exists (a rerun reuses
    it); returns (train, val, calib) paths."""
    os.makedirs(work, exist_ok=True)
    data = open(TEXT, "rb").read()
    cut = len(data) - len(data) // 10
    train, val = os.path.join(work, "train.txt"), os.path.join(work, "val.txt")
    open(train, "wb").write(data[:cut])
    open(val, "wb").write(data[cut:])
    calib = os.path.join(work, "s.calib")
    if not os.path.exists(calib):
        run([sm, "calibrate", model, "-f", train, "--tokens", "32768", "-o", calib])
    return train, val, calib
