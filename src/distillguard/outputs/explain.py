"""Plain-language "how to read it" for each signal name, in one place.

The report, campaigns.md and docs/report.md all quote these; a sceptic reading the
evidence should not need the source code to know what a number means.
"""

from __future__ import annotations

from collections.abc import Iterable

SIGNAL_EXPLANATIONS: dict[str, str] = {
    "extraction_prompts": (
        "Share of the campaign's exchanges whose prompts ask for material a student model is "
        "trained on: chain-of-thought written out step by step, grading against a rubric, or "
        "'safe' rewrites. The detail splits it by kind. Ordinary workloads contain a few such "
        "prompts; a harvest built for training contains mostly these."
    ),
    "shared_template_families": (
        "Share of the members' prompts that fall into near-duplicate template families used "
        "by several members (the prompt with numbers, names, quoted spans and code "
        "normalised away). Independent customers rarely send the same skeleton; one script "
        "driving many accounts does, thousands of times."
    ),
    "capability_focus": (
        "Share of the exchanges in the campaign's main capability category: what the "
        "operator was trying to copy. Context for the other signals, not evidence alone."
    ),
    "shared_infrastructure": (
        "Number of member pairs linked by shared infrastructure (payment instrument, sign-up "
        "e-mail domain or IP, addresses and /24 or /48 blocks, networks, sign-up bursts), per "
        "kind in the detail. Keys that many unrelated accounts share (carrier NAT, campus "
        "networks, large clouds, public webmail) count for little."
    ),
    "coordinated_accounts": (
        "Number of accounts the link graph groups into this campaign. Scale, not evidence by "
        "itself: the other signals say why they belong together."
    ),
    "volume_inside_benign_range": (
        "The median member's exchanges per active day against the benign 99th percentile. "
        "Below it means each account looks ordinary by volume: the harvest was spread over "
        "many accounts precisely so that per-account limits would not fire."
    ),
    "verification_abuse": (
        "Members came through a verification path (education, research, startup ...) far "
        "more often than ordinary accounts: a programme's trust was borrowed in bulk."
    ),
    "fresh_accounts": (
        "Members were used at full volume shortly after sign-up, unlike ordinary accounts: "
        "typical of accounts registered in bulk for one job."
    ),
    "unusual_": (
        "Share of the members above the 99% quantile of uncoordinated accounts for one "
        "per-account feature, named in the detail (e.g. share of extraction prompts, distinct "
        "networks, output tokens per input token). Among ordinary accounts about 1% exceed "
        "it by construction; a campaign where most members do is unusual as a group."
    ),
    "fillers_": (
        "As for unusual_*: the share of traffic from members above the reference, but "
        "counted only over the members that fill the campaign's prompt templates. When "
        "shared templates are the only tie between the accounts, this is "
        "what the case rests on: the users of one product all send its templates, and only "
        "those using its step-by-step command look like extraction; an operator's accounts "
        "send its templates to harvest, so nearly all of them do."
    ),
    "synchrony": (
        "How often the accounts are active in the same short time buckets, compared with a "
        "null model that shifts each account's activity in time while keeping its volume and "
        "daily rhythm. The value is a z-score: independent users sharing office hours stay "
        "near 0-2; above 4 is very unlikely by chance; scripted fleets often reach 10 or more."
    ),
    "shared_payment": (
        "Number of accounts paying with the same payment instrument (a stable hashed "
        "fingerprint, never the card number). Distinct customers do not share a card; "
        "instruments shared by many unrelated accounts (resellers) are down-weighted."
    ),
    "shared_ip": (
        "Accounts connecting from the same addresses in the same time windows. Addresses "
        "shared by many unrelated accounts (carrier NAT, campus networks, large clouds) are "
        "down-weighted, so only unusually exclusive sharing counts."
    ),
    "shared_cidr": (
        "Accounts connecting from the same IPv4 /24 or IPv6 /48 block in the same time "
        "window, down-weighted where many unrelated accounts share the block."
    ),
    "shared_asn": (
        "Accounts connecting from the same autonomous system (network operator). Weak alone: "
        "large providers host many customers; it counts only for small or unusual networks."
    ),
    "email_domain": (
        "Accounts signed up with e-mail addresses at the same non-public domain (public "
        "webmail is excluded). A private domain used by many fresh accounts suggests bulk "
        "registration."
    ),
    "signup_burst": (
        "Accounts created within a short window of each other, from related infrastructure. "
        "Bulk registration produces bursts that organic sign-ups do not."
    ),
    "cot_elicitation": (
        "Share of exchanges whose system or user prompt asks the model to reveal, "
        "reconstruct or write out its step-by-step or internal reasoning: the material a "
        "student model is trained on. Compare with the benign share given in the detail."
    ),
    "grading": (
        "Share of prompts asking the model to grade or score answers against a rubric: "
        "harvesting reward-model labels. Ordinary users rarely send these in bulk."
    ),
    "safe_rewrite": (
        "Share of prompts asking the model to rewrite a text so it becomes safe or harmless: "
        "harvesting safety-tuning data."
    ),
    "release_pivot": (
        "Share of the campaign's traffic that moved to a newly released model within 24 hours "
        "of its release, against the benign accounts' share. Harvesters switch at once to "
        "capture the new model; ordinary customers migrate over weeks."
    ),
    "regularity": (
        "How regular the spacing between an account's requests is. Scripts send at a steady "
        "rate; people are bursty. Low variation of inter-arrival times points to automation."
    ),
    "account_age": (
        "Time from sign-up to first use. Fresh accounts used at full volume right away are "
        "typical of bulk-registered accounts."
    ),
    "hour_profile": (
        "The account's activity by hour of day and day of week. Round-the-clock flat activity "
        "without a human day/night rhythm points to automation."
    ),
}

# Other spellings (edge kinds, reason prefixes, older names) -> the entry above that explains them.
ALIASES: dict[str, str] = {
    "template_family": "shared_template_families", "template": "shared_template_families",
    "family": "shared_template_families", "payment": "shared_payment", "ip": "shared_ip",
    "signup_ip": "shared_ip", "ip24": "shared_cidr", "ip_prefix": "shared_cidr",
    "asn": "shared_asn", "asn_day": "shared_asn", "rubric_grading": "grading",
    "inter_arrival": "regularity", "volume": "volume_inside_benign_range",
    "capability_concentration": "capability_focus",
}

GENERIC_EXPLANATION = (
    "A detector statistic for which no specific guide is written. Read the value against "
    "the detail, which states the baseline it was compared with; higher means stronger "
    "evidence of coordinated harvesting."
)


def signal_name(reason: str) -> str:
    """The signal part of a machine-readable reason such as `synchrony:z=9.1`."""
    return reason.split(":", 1)[0].split("=", 1)[0].strip()


def explain(name: str) -> str:
    """The explanation for a signal or reason name: exact, else the longest known prefix."""
    key = signal_name(name)
    known = SIGNAL_EXPLANATIONS.keys() | ALIASES.keys()
    if key not in known:
        prefixes = [k for k in known if key.startswith(k)]
        key = max(prefixes, key=len) if prefixes else ""
    return SIGNAL_EXPLANATIONS.get(ALIASES.get(key, key), GENERIC_EXPLANATION)


def reading_guide(names: Iterable[str]) -> list[tuple[list[str], str]]:
    """(names, explanation) pairs for the names given, names sharing a text grouped."""
    groups: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        groups.setdefault(explain(name), []).append(name)
    return [(group, text) for text, group in groups.items()]
