"""Fuzz the readers of untrusted files for a while: the properties of tests/test_fuzz.py
(read_image, the manifest and label-table parsers, load_model), with many more examples.

    .venv/bin/python fuzz/fuzz_loaders.py --minutes 2
    .venv/bin/python fuzz/fuzz_loaders.py --minutes 30 --targets image-mutated,model

Time is shared equally between the targets; each runs rounds of hypothesis examples with
a new seed per round until its share is used. A failure is shrunk by hypothesis, printed,
and its bytes saved under --out; the exit code is 1 if any target failed.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_fuzz  # noqa: E402  (the properties and strategies live with the tests)


def fuzz_target(name: str, seconds: float, examples_per_round: int, out: Path) -> dict:
    strategy, prop = test_fuzz.TARGETS[name]
    count = {"examples": 0}
    failures: list[dict] = []

    def counted(data: bytes) -> None:
        count["examples"] += 1
        try:
            prop(data)
        except BaseException:
            (out / f"{name}-failure-{len(failures)}.bin").write_bytes(data)
            raise

    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        test = settings(max_examples=examples_per_round, deadline=None, database=None,
                        suppress_health_check=list(HealthCheck))(given(strategy)(counted))
        try:
            seed(1000 + rounds)(test)()
        except Exception as exc:  # hypothesis re-raises the shrunk failure
            failures.append({"round": rounds, "error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc(limit=6)})
            print(f"[{name}] FAILURE in round {rounds}:\n{failures[-1]['traceback']}",
                  file=sys.stderr)
        rounds += 1
    return {"target": name, "seconds": round(seconds), "rounds": rounds,
            "examples": count["examples"], "failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="total time (default 2)")
    parser.add_argument("--targets", default=",".join(test_fuzz.TARGETS),
                        help=f"comma-separated, from {', '.join(test_fuzz.TARGETS)}")
    parser.add_argument("--examples-per-round", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "leukolearn-fuzz",
                        help="folder for failing inputs and summary.json")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in test_fuzz.TARGETS]
    if unknown or args.minutes <= 0 or args.examples_per_round < 1:
        parser.error(f"unknown target {unknown[0]!r}" if unknown else
                     "--minutes and --examples-per-round must be positive")
    args.out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")  # decoders warn about the damaged files we feed them
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # and tifffile logs them
    share = args.minutes * 60 / len(targets)
    results = []
    for name in targets:
        results.append(fuzz_target(name, share, args.examples_per_round, args.out))
        r = results[-1]
        print(f"{name:14s} {r['examples']:7d} examples in {r['seconds']} s "
              f"({r['rounds']} rounds), {len(r['failures'])} failure(s)")
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    return 1 if any(r["failures"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
