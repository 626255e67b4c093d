"""The pre-registration page states exactly the claims the code decides, and no other page types a
verdict: every verdict word the book shows comes from ood_lib.findings.claims / ood_lib.findings.study."""

import re

from ood_lib.findings.claims import CLAIMS, CONJUNCTION, IDENTITY_TOL, MARGINS, MIN_SEEDS, N_BOOT
from conftest import REPO

PAGE = REPO / "book" / "preregistration.md"
VERDICT_WORDS = re.compile(r"\b(supported|refuted|inconclusive)\b", re.I)


def test_the_page_lists_every_claim_of_the_code_and_no_other():
    rows = re.findall(r"^\| `([a-z_]+)` \|", PAGE.read_text(), re.M)
    assert rows == [CONJUNCTION.key, *(c.key for c in CLAIMS)]


def test_the_page_states_which_verdicts_support_each_claim():
    text = PAGE.read_text()
    match_or_beat = [c.key for c in CLAIMS if c.supported_by == ("better", "equivalent")]
    assert match_or_beat == ["preregistered_beats_gradnorm", "some_member_beats_gradnorm"]
    assert all(c.supported_by == ("better",) for c in (*CLAIMS, CONJUNCTION) if c.key not in match_or_beat
               and c.kind != "identity")
    assert "Claim.supported_by" in text and "OODSet.kind" in text


def test_the_page_states_the_rule_the_code_applies():
    text = PAGE.read_text()
    assert f"{N_BOOT:,}" in text and "10^{-10}" in text and IDENTITY_TOL == 1e-10
    assert "same resample" in text and "max-statistic" in text and "Holm" in text


def test_the_page_states_the_margins_of_the_four_verdict_rule():
    text = PAGE.read_text()
    assert MARGINS == {"auroc": 1.0, "fpr95": 2.0} and MIN_SEEDS == 5
    assert r"\delta_\text{AUROC} = 1.0$" in text and r"\delta_\text{FPR95} = 2.0$" in text
    assert "at least five\nseeds" in text or "at least five seeds" in text
    for word in ("*equivalent*", "*better*", "*worse*", "*inconclusive*", "far-natural", "far-synthetic", "Bonferroni"):
        assert word in text, word


def test_no_page_but_the_rules_types_a_verdict():
    for page in sorted((REPO / "book").glob("*.md")):
        if page == PAGE:
            continue
        text = re.sub(r"\{glue:[a-z]*\}`[^`]*`", "", page.read_text())  # pasted (computed) text is fine
        found = VERDICT_WORDS.findall(text)
        assert not found, f"{page.name} types verdict words {found}"


def test_every_claim_heading_of_the_discussion_carries_a_computed_finding():
    """The bold numbered claim headings ("**4. … — mostly not: 3 of 21 unit × cells.**") paste their
    finding: a heading that only restated the hypothesis would read as if it were the result."""
    text = (REPO / "book" / "discussion.md").read_text()
    headings = re.findall(r"^\*\*(\d+)\. (.*?)\*\*", text, re.M | re.S)
    assert [int(n) for n, _ in headings] == list(range(1, len(headings) + 1)) and len(headings) >= 6
    for n, heading in headings:
        assert "{glue:text}`" in heading, f"claim heading {n} pastes no computed finding: {heading[:80]!r}"
