#!/usr/bin/env python3
"""The low-bit quality table of BENCHMARKS.md ("### Quality on the shared model"): for each
quantizer at each width, the shared model's held-out perplexity and the KL divergence of its
next-token distributions against the F32 model and against 8-bit RTN (llama.cpp's rule for a
new quantization type: report PPL and KLD against the full-precision model and against a q8
reference).

Usage: tools/quant_table.py BUILD/structmat [--work DIR] [--only SUBSTRING]

Steps (stdlib only; one process at a time, the machine is shared):
  1. train.txt = the first 90% of data/tinyshakespeare.txt, val.txt = the last len//10 bytes
     (the model's validation split); structmat calibrate on train.txt, 32768 tokens;
  2. base log-probabilities: structmat eval MODEL -f val.txt -c 256 --chunks 64 --score all
     --kl-divergence-base f32.kld, and the same for the uniform rtn:bits=8 model -> rtn8.kld;
  3. per spec: structmat compress MODEL --uniform SPEC [--calib s.calib] -o DIR --json (bits per
     weight from its summary; --calib only for the specs that need statistics: gptq and
     bitstack's aware option, so that LoRC's low-rank part is plain SVD as in ZeroQuant-V2),
     then structmat eval DIR --kl-divergence-base {f32,rtn8}.kld --kl-divergence --json.
The binary is copied into DIR first (a rebuild meanwhile does not change the run). Every result
is kept in DIR/results.json, so a rerun only does what is missing. Prints a Markdown table.
"""
import json
import os
import shutil
import sys

from benchdata import MODEL, prepare, run
EVAL = ["-c", "256", "--chunks", "64", "--score", "all"]


def specs():
    """(row label, width label, spec) in table order."""
    out = []
    for b in (2, 3, 4, 8):
        out.append(("rtn", b, "rtn:bits=%d" % b))
        out.append(("rtn rotate=hadamard", b, "rtn:bits=%d,rotate=hadamard" % b))
        out.append(("gptq", b, "gptq:bits=%d" % b))
        out.append(("gptq rotate=hadamard", b, "gptq:bits=%d,rotate=hadamard" % b))
        out.append(("rtn + lowrank:rank=8,dtype=q8 (LoRC)", b,
                    "rtn:bits=%d+lowrank:rank=8,dtype=q8" % b))
    for b in (2, 3, 4):  # the N largest-|w| weights of every matrix kept in F32
        out.append(("rtn keep-outliers=64", b, "rtn:bits=%d,keep-outliers=64" % b))
        out.append(("gptq keep-outliers=64", b, "gptq:bits=%d,keep-outliers=64" % b))
    out.append(("onebit", 1, "onebit"))
    out.append(("onebit keep-outliers=64", 1, "onebit:keep-outliers=64"))
    for lv in (1, 2, 3, 4):
        out.append(("bitstack:k=4,aware", "%d lvl" % lv, "bitstack:k=4,levels=%d,aware" % lv))
    return out


def needs_calib(spec):
    return spec.startswith("gptq") or "aware" in spec


def last_json(out, key=None):
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            obj = json.loads(line)
            return obj[key] if key else obj
    raise SystemExit("no JSON in output:\n" + out)


def dirname(spec):
    return "m-" + "".join(c if c.isalnum() or c in "=." else "_" for c in spec)


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        raise SystemExit(__doc__)
    work, only = "/tmp/quant_table", None
    src = os.path.abspath(args[0])
    rest = args[1:]
    while rest:
        if rest[0] == "--work":
            work = rest[1]
        elif rest[0] == "--only":
            only = rest[1]
        else:
            raise SystemExit("unknown option " + rest[0])
        rest = rest[2:]
    os.makedirs(work, exist_ok=True)
    sm = os.path.join(work, "structmat")
    shutil.copy(src, sm)
    model = os.path.abspath(MODEL)
    train, val, calib = prepare(sm, work, model)
    resf = os.path.join(work, "results.json")
    res = json.load(open(resf)) if os.path.exists(resf) else {}

    def save():
        json.dump(res, open(resf + ".tmp", "w"), indent=1, sort_keys=True)
        os.replace(resf + ".tmp", resf)

    f32kld, r8kld = os.path.join(work, "f32.kld"), os.path.join(work, "rtn8.kld")
    if "f32" not in res or not os.path.exists(f32kld):
        if os.path.exists(f32kld):
            os.remove(f32kld)
        out = run([sm, "eval", model, "-f", val] + EVAL + ["--kl-divergence-base", f32kld,
                                                            "--json"])
        res["f32"] = last_json(out)
        save()

    def compress(spec):
        d = os.path.join(work, dirname(spec))
        key = "bpw:" + spec
        if key not in res or not os.path.isdir(d):
            cmd = [sm, "compress", model, "--uniform", spec, "-o", d, "--force", "--json"]
            if needs_calib(spec):
                cmd += ["--calib", calib]
            res[key] = last_json(run(cmd), "summary")["bpw"]
            save()
        return d

    r8 = compress("rtn:bits=8")
    if not os.path.exists(r8kld):
        run([sm, "eval", r8, "-f", val] + EVAL + ["--kl-divergence-base", r8kld, "--json"])

    rows = []
    for label, width, spec in specs():
        if only and only not in spec:
            continue
        d = compress(spec)
        for base, bf in (("f32", f32kld), ("rtn8", r8kld)):
            key = base + ":" + spec
            if key not in res:
                out = run([sm, "eval", d, "--kl-divergence-base", bf, "--kl-divergence",
                           "--json"])
                res[key] = last_json(out)
                save()
        rows.append((label, width, spec))

    f = res["f32"]
    print("F32: PPL %.4f +/- %.4f, NLL %.4f nats per byte, %d scored tokens\n"
          % (f["ppl"], f["ppl_err"], f["nll"], f["tokens_scored"]))
    print("| quantizer | bits | spec | bits/weight | PPL | KLD vs F32 (mean +/- se) | "
          "top-1 agree vs F32 | KLD vs RTN-8 | top-1 agree vs RTN-8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, width, spec in rows:
        a, b = res["f32:" + spec], res["rtn8:" + spec]
        print("| %s | %s | `%s` | %.3f | %.4f | %.5f +/- %.5f | %.4f | %.5f | %.4f |"
              % (label, width, spec, res["bpw:" + spec], a["ppl"], a["kld_mean"],
                 a["kld_stderr"], a["top1_agreement"], b["kld_mean"], b["top1_agreement"]))


if __name__ == "__main__":
    main()
