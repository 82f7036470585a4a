#!/usr/bin/env python3
"""Writes the campaign report of scripts/fuzz_campaign.sh (Markdown and JSON) from its
work folder: libFuzzer's logs, the artifacts, and the corpus replay statistics."""
import json
import os
import re
import subprocess
import sys

work, stamp, secs, targets = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def revision():
    """The git revision the campaign built, with `-dirty` if tracked files differed."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src", "tools", "spec", "fuzz"],
                               check=False).returncode != 0
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    """CPU model, core count and the widest SIMD level the CPU reports."""
    info = read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {os.cpu_count()} cores, {simd}"


report = {"stamp": stamp, "seconds_per_target": secs, "engine":
          "libFuzzer via cargo-fuzz, --sanitizer none, fork mode, stable toolchain",
          "revision": revision(), "machine": machine(),
          "jobs": int(os.environ.get("FUZZ_JOBS", "1")),
          "targets": []}
for t in targets:
    log = read(f"{work}/{t}.log")
    execs = cov = ft = corp = None
    ooms = timeouts = crashes = 0
    for line in log.splitlines():
        m = re.match(r"#(\d+):?\s+(?:\w+\s+)?cov: (\d+) ft: (\d+) corp: (\d+)", line)
        if m:
            execs, cov, ft, corp = (int(g) for g in m.groups())
        m = re.search(r"oom/timeout/crash: (\d+)/(\d+)/(\d+)", line)
        if m:
            ooms, timeouts, crashes = (int(g) for g in m.groups())
        m = re.match(r"stat::number_of_executed_units: (\d+)", line)
        if m:
            execs = int(m.group(1))
    artifacts = []
    for a in read(f"{work}/{t}.new_artifacts").split():
        desc = read(f"{work}/{t}.{a}.input.txt").strip()
        artifacts.append({"file": f"fuzz/artifacts/{t}/{a}",
                          "bytes": os.path.getsize(f"fuzz/artifacts/{t}/{a}"),
                          "decoded_input": desc})
    try:
        stats = json.loads(read(f"{work}/{t}.stats.json", "{}"))
    except json.JSONDecodeError:
        stats = {"error": read(f"{work}/{t}.stats.err")[-2000:]}
    report["targets"].append({
        "target": t, "wall_seconds": int(read(f"{work}/{t}.seconds", "0") or 0),
        "executions": execs, "coverage_edges": cov, "features": ft,
        "corpus_size": corp, "ooms": ooms, "timeouts": timeouts, "crashes": crashes,
        "artifacts": artifacts, "replay": stats})

os.makedirs("fuzz/reports", exist_ok=True)
with open(f"fuzz/reports/campaign-{stamp}.json", "w") as f:
    json.dump(report, f, indent=2)


def fmt(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


md = [f"# Fuzz campaign {stamp}", "",
      f"{secs} s per target; {report['engine']}; revision {report['revision']}, "
      f"{report['machine']}, {report['jobs']} libFuzzer job(s). Produced by `scripts/fuzz_campaign.sh "
      f"{secs}`. Replay: every input of `fuzz/corpus/<target>` and the run's new corpus "
      "re-checked through `polyattn_tools::fuzzing` (`tools/examples/fuzz_corpus.rs stats`).", "",
      "| target | wall s | executions | coverage (edges) | features | corpus | crashes | OOMs | timeouts | replayed | refused | replay failures |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for r in report["targets"]:
    s = r["replay"]
    md.append(f"| {r['target']} | {r['wall_seconds']} | {fmt(r['executions'])} | "
              f"{fmt(r['coverage_edges'])} | {fmt(r['features'])} | {fmt(r['corpus_size'])} | "
              f"{r['crashes']} | {r['ooms']} | {r['timeouts']} | {fmt(s.get('decoded'))} | "
              f"{fmt(s.get('refused'))} | {len(s.get('failures', []))} |")
md += ["", "## Ranges explored (replayed inputs)", "",
       "| target | n | B = max entry of Q, K | max R (poly) or max abs(S) (exact) | max degree | max measured/allowed |",
       "| --- | ---: | ---: | ---: | ---: | ---: |"]
for r in report["targets"]:
    s = r["replay"]
    md.append(f"| {r['target']} | {fmt(s.get('n_min'))}..{fmt(s.get('n_max'))} | "
              f"{fmt(s.get('b_min'))}..{fmt(s.get('b_max'))} | {fmt(s.get('radius_max'))} | "
              f"{fmt(s.get('degree_max'))} | {fmt(s.get('max_tightness'))} |")
pb = next((r for r in report["targets"] if r["target"] == "poly_bound"), None)
if pb and pb["replay"].get("threshold_buckets"):
    md += ["", "## poly_bound around the threshold", "",
           "| B / sqrt(ln n) | inputs | refused |", "| --- | ---: | ---: |"]
    for name, n, refused in pb["replay"]["threshold_buckets"]:
        md.append(f"| {name} | {n} | {refused} |")
md += ["", "## Crashes, OOMs and timeouts", ""]
any_art = False
for r in report["targets"]:
    for a in r["artifacts"]:
        any_art = True
        md += [f"### {a['file']} ({a['bytes']} bytes)", "", "```", a["decoded_input"][:3000], "```", ""]
    for f in r["replay"].get("failures", []):
        any_art = True
        md += [f"- replay failure ({r['target']}): `{f[:500]}`"]
if not any_art:
    md.append("None.")
with open(f"fuzz/reports/campaign-{stamp}.md", "w") as f:
    f.write("\n".join(md) + "\n")
