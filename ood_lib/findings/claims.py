"""The study's claims and the rules that decide them, fixed before any number was computed.

Each :class:`Claim` names the statistic, the comparison and the claimed direction; the book's page
*Pre-registration* states the same rules in prose (a test keeps the two in step). The rule is one
for every comparison claim:

* statistic — the difference of two scores' AUROC (percent), averaged over the OOD sets of one
  group (near, far, covariate), decided separately per group and per benchmark × model;
* interval — a paired bootstrap (:class:`ood_lib.stats.paired.PairedBootstrap`: the same resample of ID
  and OOD samples for both scores), :data:`N_BOOT` resamples, 95 % percentile interval;
* verdict — "supported" if the interval excludes 0 in the claimed direction, "refuted" if it
  excludes 0 the other way, "inconclusive" otherwise (so a *match* is "inconclusive");
* a claim over a family ("some U·V member beats GradNorm") uses simultaneous intervals from the
  bootstrap distribution of the maximum studentised difference over the members: "supported" if
  some member's interval lies above 0, "refuted" if every member's lies below 0.

The two identity claims are decided by a tolerance instead: the largest difference between the
autograd gradient norm and its closed form, in units of the bounded V term, must stay below
:data:`IDENTITY_TOL` on every image of every set.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import unknown_name

N_BOOT = 1000  # the smallest number of bootstrap resamples a verdict may rest on
LEVEL = 0.95
IDENTITY_TOL = 1e-10
NOT_RUN = "not run"

# The rule of 6 December 2026 (page *Pre-registration*): equivalence margins, in percentage points,
# of the four-verdict rule (better · equivalent · worse · inconclusive), fixed before any verdict
# was computed with them.
MARGINS = {"auroc": 1.0, "fpr95": 2.0}
MIN_SEEDS = 5  # training seeds of a hierarchical bootstrap, at least


@dataclass(frozen=True)
class Claim:
    """One pre-registered claim: ``a`` against ``b`` (or a family against ``b``), in ``direction``."""

    key: str
    source: str  # who claims it: the paper's claim number, or the GradNorm paper
    statement: str
    short: str  # a label for tables and figures
    kind: str  # "identity", "difference" or "family"
    a: str  # the method (for a family: the family's name)
    b: str
    direction: int = +1  # +1: AUROC(a) − AUROC(b) is claimed > 0
    # the four-way verdicts that support it (rule of 7 December 2026): "match or beat" is
    # supported by better or equivalent, "beats" by better only
    supported_by: tuple[str, ...] = ("better",)

    @property
    def per_group(self) -> bool:
        """Comparison claims are decided per OOD group; identities once per benchmark."""
        return self.kind != "identity"


CLAIMS: tuple[Claim, ...] = (
    Claim("gradnorm_identity", "claim 1", "GradNorm's gradient norm equals ‖h‖₁‖p − u‖₁ / T",
          "GradNorm = closed form", "identity", "gradnorm_autograd", "gradnorm"),
    Claim("exgrad_identity", "claim 2", "ExGrad equals 2‖h‖₁ Σ p(1 − p) / T",
          "ExGrad = closed form", "identity", "exgrad_autograd", "exgrad"),
    Claim("product_beats_v", "claim 4", "GradNorm (U·V) beats its output term ‖p − u‖₁ alone",
          "GradNorm > its V alone", "difference", "gradnorm", "one*pu_l1"),
    Claim("product_beats_u", "claim 4", "GradNorm (U·V) beats its feature norm ‖h‖₁ alone",
          "GradNorm > its U alone", "difference", "gradnorm", "l1*one"),
    Claim("norm_helps_msp", "claim 4", "‖h‖₁·MSP beats MSP alone (the feature norm helps)",
          "‖h‖₁·MSP > MSP", "difference", "l1*msp", "msp"),
    Claim("preregistered_beats_gradnorm", "claim 5", "‖h‖₁·MSP, chosen before any result, beats GradNorm",
          "‖h‖₁·MSP > GradNorm", "difference", "l1*msp", "gradnorm", supported_by=("better", "equivalent")),
    Claim("some_member_beats_gradnorm", "claim 5", "some gradient-free U·V member beats GradNorm",
          "some U·V member > GradNorm", "family", "uv_members", "gradnorm", supported_by=("better", "equivalent")),
    Claim("gradnorm_beats_msp", "GradNorm paper", "GradNorm beats MSP", "GradNorm > MSP", "difference", "gradnorm", "msp"),
    Claim("gradnorm_beats_energy", "GradNorm paper", "GradNorm beats Energy", "GradNorm > Energy", "difference", "gradnorm", "energy"),
)

# Claim 4 as stated (rule of 6 December 2026): the conjunction of its two halves in one cell
CONJUNCTION = Claim("u_and_v_weaker", "claim 4", "‖h‖₁ alone and ‖p − u‖₁ alone are each weaker than GradNorm",
                    "GradNorm > U and > V", "conjunction", "product_beats_v", "product_beats_u")

CLAIM_KEYS = tuple(c.key for c in CLAIMS)


def get_claim(key: str) -> Claim:
    """The claim named ``key``."""
    for c in (*CLAIMS, CONJUNCTION):
        if c.key == key:
            return c
    raise unknown_name("claim", key, (*CLAIM_KEYS, CONJUNCTION.key))


def identity_verdict(worst: float) -> str:
    """"supported" if the worst difference (V units) is at most :data:`IDENTITY_TOL`, else "refuted"."""
    return "supported" if worst <= IDENTITY_TOL else "refuted"
