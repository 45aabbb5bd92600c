#!/usr/bin/env python3
# Runs each test binary alternately with a fixed iteration count and records
# the CPU time (user+sys of the child) per op, in benchstat's format.
import resource, subprocess, re, sys
bins = {"before": "./before.test", "mine": "./mine.test", "after": "./after.test"}
benches = [("PublishConsume", 100000), ("RoundTrip", 20000)]
out = {k: open(f"cpu-{k}.txt", "w") for k in bins}
for rnd in range(10):
    for name, n in benches:
        for k, b in bins.items():
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            p = subprocess.run([b, "-test.run", "^$", "-test.bench", "^Benchmark%s$" % name, "-test.benchtime", "%dx" % n],
                               capture_output=True, text=True)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            m = re.search(r"^Benchmark\S+\s+\d+\s+(\d+(?:\.\d+)?) ns/op", p.stdout, re.M)
            wall = m.group(1) if m else "0"
            out[k].write("Benchmark%s-2 %d %.1f cpu-ns/op %s wall-ns/op\n" % (name, n, cpu * 1e9 / n, wall))
            out[k].flush()
open("cpu-done.txt", "w").write("done\n")
