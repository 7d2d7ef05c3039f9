"""Run every benchmark (``bench/bench_*.py``), print a short report and write JSON to ``bench/out/``.

    .venv/bin/python -m bench            # everything (under 15 minutes on a 2-core CPU)
    .venv/bin/python -m bench --quick    # a fast pass that checks the benchmarks run
    .venv/bin/python -m bench --only train,metrics

Each module exposes ``run(quick: bool) -> dict``. Timings on shared machines are noisy, so the
benchmarks report ratios of things measured side by side in one run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _modules(only: set[str] | None) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        unknown = only - {n.removeprefix("bench_") for n in names}
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; known: {[n.removeprefix('bench_') for n in names]}")
        names = [n for n in names if n.removeprefix("bench_") in only]
    return names


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _print_result(name: str, result: dict, out=sys.stdout) -> None:
    print(f"\n== {name} ==", file=out)
    for key, value in result.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            cols = list(dict.fromkeys(k for r in value for k in r))
            widths = [max(len(c), *(len(_fmt(r.get(c, ""))) for r in value)) for c in cols]
            print(f"{key}:", file=out)
            print("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)), file=out)
            for r in value:
                print("  " + "  ".join(_fmt(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)), file=out)
        elif isinstance(value, dict):
            print(f"{key}:", file=out)
            for k, v in value.items():
                print(f"  {k}: {_fmt(v) if not isinstance(v, (dict, list)) else json.dumps(v, default=str)}", file=out)
        else:
            print(f"{key}: {_fmt(value)}", file=out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: checks that every benchmark runs")
    ap.add_argument("--only", help="comma-separated subset, e.g. train,metrics")
    ap.add_argument("--out", default=str(HERE / "out"), help="folder for the JSON report")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    import torch

    report = {"machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                          "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
                          "torch": torch.__version__},
              "quick": args.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": {}}
    failed = []
    t0 = time.time()
    for name in _modules(set(args.only.split(",")) if args.only else None):
        t = time.time()
        try:
            result = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        except Exception:  # report and go on: one broken benchmark should not hide the others
            failed.append(name)
            result = {"error": traceback.format_exc(limit=3)}
        result["seconds"] = round(time.time() - t, 1)
        report["results"][name] = result
        _print_result(name, result)
    report["seconds"] = round(time.time() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nreport: {path}  ({report['seconds']:.0f} s)")
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
