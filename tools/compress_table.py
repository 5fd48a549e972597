#!/usr/bin/env python3
"""The compression table of BENCHMARKS.md: structmat compress's planned model against every single
method applied uniformly at the largest setting that fits, at several bits-per-weight targets.

Usage: tools/compress_table.py BUILD/structmat [--targets 4,3,2.5,2] [--work DIR]

Steps (all with the same calibration statistics, 32768 tokens of the training text = the first
90% of data/tinyshakespeare.txt; held-out text = the last len//10 bytes):
  1. structmat compress --save-curves once (all methods), then --curves per target, eval each;
  2. per method a list of uniform specs; the size of each is what `compress --uniform --json`
     reports; at each target the largest that fits is evaluated (for rtn and gptq, with and
     without rotation at that size, the better one is reported; lowrank, monarch and blast: the
     ratio found by bisection for Q4 and Q8 factors, the better one reported);
  3. eval: -c 256 --chunks 64 --score all on the held-out text: mean NLL in nats per byte.
Every model and its NLL stay in DIR (DIR/<name>.bytes, .nll), so a rerun reuses them.
Prints a Markdown table and writes DIR/table.json.
"""
import json
import os
import sys

from benchdata import MODEL, prepare, run


def summary(out):
    for line in out.splitlines():
        if line.startswith('{"summary"'):
            return json.loads(line)["summary"]
    raise SystemExit("no summary in compress output")


def main():
    sm = os.path.abspath(sys.argv[1])
    targets = [4.0, 3.0, 2.5, 2.0]
    work = "/tmp/compress_table"
    args = sys.argv[2:]
    while args:
        if args[0] == "--targets":
            targets = [float(x) for x in args[1].split(",")]
        elif args[0] == "--work":
            work = args[1]
        args = args[2:]
    train, val, calib = prepare(sm, work)
    weights = None
    nll_cache = {}

    def nll(d):  # cached in the work directory (a rerun reuses what is done)
        f = os.path.join(work, os.path.basename(d.rstrip("/")) + ".nll")
        if d not in nll_cache:
            if os.path.exists(f):
                nll_cache[d] = float(open(f).read())
            else:
                out = run([sm, "eval", d, "-f", val, "-c", "256", "--chunks", "64", "--score",
                           "all", "--json"])
                nll_cache[d] = json.loads(out)["nll"]
                open(f, "w").write("%.9f" % nll_cache[d])
        return nll_cache[d]

    size_cache = {}

    def uniform(spec):  # (bytes, dir) of the model with spec everywhere
        if spec not in size_cache:
            d = os.path.join(work, "u-" + spec.replace(":", "_").replace(",", "_"))
            f = d + ".bytes"
            if os.path.exists(f) and os.path.exists(d):
                size_cache[spec] = (int(open(f).read()), d)
            else:
                s = summary(run([sm, "compress", MODEL, "--calib", calib, "--uniform", spec,
                                 "-o", d, "--force", "--json"]))
                open(f, "w").write(str(s["bytes"]))
                size_cache[spec] = (s["bytes"], d)
        return size_cache[spec]

    base = nll(MODEL)
    curves = os.path.join(work, "curves.json")
    rows = []
    first = True
    for t in targets:
        d = os.path.join(work, "plan-%g" % t)
        cmd = [sm, "compress", MODEL, "--calib", calib, "--target", "%gbpw" % t, "-o", d,
               "--force", "--json"]
        cmd += ["--curves", curves] if os.path.exists(curves) else ["--save-curves", curves]
        s = summary(run(cmd))
        first = False
        weights = s["weights"]
        budget = s["target_bytes"]
        row = {"target_bpw": t, "planned": {"bytes": s["bytes"], "bpw": s["bpw"],
                                            "size_ratio": s["ratio"], "nll": nll(d)}}

        def best_of(specs):  # the largest-fitting group of specs (same size), best NLL
            fit = [(uniform(sp)[0], sp) for sp in specs]
            fit = [f for f in fit if f[0] <= budget]
            if not fit:
                return None
            top = max(b for b, _ in fit)
            cands = [(nll(uniform(sp)[1]), sp, b) for b, sp in fit if b == top]
            n, sp, b = min(cands)
            return {"spec": sp, "bytes": b, "bpw": 8.0 * b / weights, "nll": n}

        for q in ["rtn", "gptq"]:
            plain = ["%s:bits=%d,group=%d%s" % (q, bits, g, ",actorder" if q == "gptq" else "")
                     for bits in [2, 3, 4, 8] for g in [32, 64, 128]]
            fit = [sp for sp in plain if uniform(sp)[0] <= budget]
            if fit:  # the largest, with and without rotation (the same size)
                top = max(uniform(sp)[0] for sp in fit)
                group = [sp for sp in fit if uniform(sp)[0] == top]
                row[q] = best_of(group + [sp + ",rotate=hadamard" for sp in group])
            else:
                row[q] = None
        outs = []
        for k in [4, 16]:  # per k the most levels that fit
            last = None
            for lv in range(1, 9):
                spec = "bitstack:k=%d,levels=%d,aware" % (k, lv)
                if uniform(spec)[0] > budget:
                    break
                last = spec
            if last:
                outs.append(best_of([last]))
        row["bitstack"] = min(outs, key=lambda o: o["nll"]) if outs else None
        for st in ["lowrank", "monarch", "blast"]:
            best = None
            for dt in ["q4", "q8"]:
                pre = {"lowrank": "lowrank:", "monarch": "monarch:blocks=4,",
                       "blast": "blast:blocks=4,"}[st]
                lo, hi = 0.0, 1.0
                found = None
                # The size does not depend on BLAST's iterations: search with iters=0 (the
                # warm start alone), then fit the found ratio with the default iterations.
                for _ in range(7):
                    mid = (lo + hi) / 2
                    spec = "%sratio=%.4f,dtype=%s%s" % (pre, mid, dt,
                                                         ",iters=0" if st == "blast" else "")
                    try:
                        b = uniform(spec)[0]
                    except SystemExit:
                        b = None
                    if b is not None and b <= budget:
                        lo, found = mid, spec
                    else:
                        hi = mid
                if found:
                    found = found.replace(",iters=0", "")
                    b, d2 = uniform(found)
                    o = {"spec": found, "bytes": b, "bpw": 8.0 * b / weights, "nll": nll(d2)}
                    if best is None or o["nll"] < best["nll"]:
                        best = o
            row[st] = best
        rows.append(row)
        sys.stderr.write(json.dumps(row) + "\n")
    json.dump({"dense_nll": base, "rows": rows}, open(os.path.join(work, "table.json"), "w"),
              indent=1)
    methods = ["rtn", "gptq", "bitstack", "lowrank", "monarch", "blast"]
    print("dense NLL %.4f nats/byte\n" % base)
    print("| target | planned (bpw, size/target) | planned dNLL | " +
          " | ".join(methods) + " |")
    print("|---|---|---|" + "---|" * len(methods))
    for r in rows:
        p = r["planned"]
        cells = []
        for m in methods:
            o = r.get(m)
            cells.append("n/a" if not o else "+%.4f (%s, %.2f)" % (o["nll"] - base, o["spec"],
                                                                    o["bpw"]))
        print("| %g bpw | %.4f, %.4f | **+%.4f** | %s |" % (
            r["target_bpw"], p["bpw"], p["size_ratio"], p["nll"] - base, " | ".join(cells)))


if __name__ == "__main__":
    main()
