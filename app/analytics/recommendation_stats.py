"""The statistics behind CHEAPER_MODEL (app/analytics/recommendations.py): Wilson intervals for
reading, the pooled z of a drop, and the test a suggestion rests on, with its correction for the
many (task, current model, cheaper model) pairs one request compares.

Why a non-inferiority test, corrected with Holm. A suggestion claims "the cheaper model passes
validation at most MAX_PASS_RATE_DROP less often". Failing to find a significant drop does not
show that (30 calls each cannot tell 95% from 85%), and with many pairs compared one of them
"matches" by chance. So each pair tests H0 "the cheaper model's rate is lower by the margin or
more" against H1 "it is lower by less" (one-sided z with Agresti-Caffo's adjusted rates: add one
pass and one failure to each model, so rates of 0 or 1 keep a variance), and a suggestion needs
H0 rejected. Rejecting H0 is the error that matters (a worse model suggested), so the family of
all pairs tested in one request is held to alpha 0.05 together with Holm's step-down method: it
controls that family-wise error under any dependence between the tests, like Bonferroni, and
rejects at least as much. (Correcting the drop test instead would make drops harder to detect,
so more pairs would "match": the opposite of the aim.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_TWO_SIDED_95 = 1.96
FAMILY_ALPHA = 0.05  # family-wise error rate of the CHEAPER_MODEL tests of one request
CORRECTION = "HOLM"


def wilson(passed: int, calls: int, z: float = Z_TWO_SIDED_95) -> tuple[float, float]:
    """The Wilson score interval of a pass rate (calls > 0)."""
    p = passed / calls
    denominator = 1 + z * z / calls
    centre = (p + z * z / (2 * calls)) / denominator
    half = z * math.sqrt(p * (1 - p) / calls + z * z / (4 * calls * calls)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def drop_z(primary: tuple[int, int], cheaper: tuple[int, int]) -> float:
    """z of the pooled two-proportion test that the cheaper model's pass rate is lower than
    the primary's; (passed, calls) each. 0 when both rates are 0 or 1 (no variance)."""
    (p1_passed, n1), (p2_passed, n2) = primary, cheaper
    pooled = (p1_passed + p2_passed) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance == 0:
        return 0.0
    return (p1_passed / n1 - p2_passed / n2) / math.sqrt(variance)


@dataclass(frozen=True)
class NonInferiority:
    z: float
    p_value: float  # one-sided, of H0 "the cheaper model is worse by the margin or more"


def non_inferiority(
    primary: tuple[int, int], cheaper: tuple[int, int], margin: float
) -> NonInferiority:
    """The one-sided test that the cheaper model's pass rate is at most `margin` below the
    primary's, on Agresti-Caffo adjusted rates; (passed, calls) each."""
    (p1_passed, n1), (p2_passed, n2) = primary, cheaper
    r1, r2 = (p1_passed + 1) / (n1 + 2), (p2_passed + 1) / (n2 + 2)
    se = math.sqrt(r1 * (1 - r1) / (n1 + 2) + r2 * (1 - r2) / (n2 + 2))
    z = (r2 - r1 + margin) / se
    return NonInferiority(z, 0.5 * math.erfc(z / math.sqrt(2)))


def holm_adjusted(p_values: list[float]) -> list[float]:
    """Holm's adjusted p-values, in the order given: H_i is rejected at family-wise level
    alpha exactly when its adjusted p-value is <= alpha. The k-th smallest p (from 0) is
    multiplied by m - k, and each adjusted value is at least those of smaller p's."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for k, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        adjusted[i] = running
    return adjusted
