"""Two cost models' picks on one set of timings: im2col's unfold with and without its strided
reads counted.

``OMP_NUM_THREADS=1 PYTHONPATH=. python docs/scripts/compare_pricing.py TIMES.pkl`` times
every strategy ``auto`` may pick on ``arraycnn tune``'s full case set, 40 held-out cases
and 7 more layers (the depthwise ones of ``depthwise_pricing.py`` and the 7×7 stride-2
reference layer), best of tune's repeats, and stores the seconds in TIMES.pkl (a later run
reuses them). It then prints, per model and case set, the geometric mean and max of the
regret time(pick) / fastest, and the cases above 1.15.
"""

from __future__ import annotations

import os
import pickle
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import array_api_compat.numpy as xp
import numpy as np

import arraycnn as ac
from arraycnn.conv import cost, im2col
from arraycnn.conv.strategy import traffic
from arraycnn.tools import tune
from arraycnn.tools.cases import holdout_cases, layer, tune_cases

EXTRA = [
    layer(16, 64, 56, 64, 3, groups=64, stride=2),
    layer(8, 32, 112, 32, 3, groups=32, stride=2),
    layer(16, 32, 56, 128, 3, groups=32),
    layer(64, 1, 28, 4, 3),
    layer(16, 64, 28, 128, 3, groups=64),
    layer(8, 3, 224, 64, 7, stride=2),
    layer(16, 64, 56, 64, 3, groups=64),
]


def one_read_per_element(g):
    """The unfold as it was counted: each element read once and written once."""
    taps = g.kh * g.kw
    return traffic(2 * taps * g.c * g.n * g.ho * g.wo, calls=2 * taps + 2)


def main(path: str) -> None:
    cal = cost.calibration_for("numpy")[0]
    sets = {"in": list(tune_cases("full")), "held": holdout_cases(40, 1), "extra": EXTRA}
    if not os.path.exists(path):
        times = {}
        for cases in sets.values():
            for case in cases:
                for s in tune.measure(case, xp, cal, repeats=tune.DEFAULT_REPEATS["full"]):
                    times[case.label, s.strategy, s.direction] = s.seconds
        with open(path, "wb") as f:
            pickle.dump(times, f)
    with open(path, "rb") as f:
        times = pickle.load(f)
    models = {"strided reads": im2col._unfold_counts, "one read": one_read_per_element}
    for model, counts in models.items():
        im2col._unfold_counts = counts
        ac.clear_caches()
        for name, cases in sets.items():
            regrets = []
            for case in cases:
                plans = tune.case_plans(case, xp, cal)
                for d in ("forward", "backward"):
                    priced = {s: p.counts for (s, dd), (p, _) in plans.items() if dd == d}
                    pick = min(priced, key=lambda s: cal.seconds(s, priced[s]))
                    fastest = min(times[case.label, s, d] for s in priced)
                    ratio = times[case.label, pick, d] / fastest
                    regrets.append(ratio)
                    if ratio > 1.15:
                        print(f"  {model}: {case.label} {d} {pick} {ratio:.2f}")
            r = np.array(regrets)
            print(f"{model}, {name}: geomean {np.exp(np.log(r).mean()):.3f} max {r.max():.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
