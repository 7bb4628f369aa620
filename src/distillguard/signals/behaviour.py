"""Per-account behaviour: what one account does, aggregated in the engine.

These features describe accounts; on their own they do not flag anyone (per-account
volume limits are exactly what campaigns evade). They feed campaign evidence and the
per-account membership test inside a campaign.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from distillguard.contract import CAPABILITIES
from distillguard.signals.registry import FAMILIES, GAPS, account_signal
from distillguard.signals.text import any_extraction_cue


def _share(cond: ir.BooleanValue) -> ir.Scalar:
    return cond.fill_null(False).cast("float64").mean()


@account_signal("volume", "Exchanges, active days and exchanges per active day: the per-account "
                "view that volume limits use (and that campaigns stay inside).")
def volume(x: ir.Table) -> dict[str, ir.Scalar]:
    return {
        "n_exchanges": x.count(),
        "first_seen": x.ts.min(),
        "last_seen": x.ts.max(),
        "active_days": x.day.nunique(),
        "active_buckets": x.bucket.nunique(),
    }


@account_signal("extraction_cues", "Share of the account's exchanges that elicit chain-of-thought, "
                "request rubric grading, or ask for safe rewrites, leaving out shared stimuli "
                "(the same prompt from several accounts in the same hour: a class's homework, "
                "a workshop's exercise) and replays (the same prompt to the same model from "
                "the same account hours later: a nightly eval suite).", requires=("prompt",))
def extraction_cues(x: ir.Table) -> dict[str, ir.Scalar]:
    own = ~(x.shared_stimulus | x.replay)
    return {
        "cot_share": _share(x.cot_elicitation & own),
        "grading_share": _share(x.grading_prompt & own),
        "safe_rewrite_share": _share(x.safe_rewrite & own),
        "extraction_share": _share(any_extraction_cue(x) & own),
    }


@account_signal("instruction_tasks", "Share of the account's exchanges that are instruction "
                "tasks in a template family the account sends only once: a harvest of "
                "instruction-tuning items sends each task once, while a product's users and a "
                "pipeline fill one template (\"Translate the following ...\") again and "
                "again.", requires=("prompt",), tags=(FAMILIES,))
def instruction_tasks(x: ir.Table) -> dict[str, ir.Scalar]:
    return {"task_share": _share(x.instruction_task & x.family_once)}


@account_signal("capability_mix", "Share of each capability category; narrow focus on one "
                "capability is typical of harvesting.")
def capability_mix(x: ir.Table) -> dict[str, ir.Scalar]:
    return {f"cap_{c}": _share(x.capability == c) for c in CAPABILITIES}


@account_signal("template_reuse", "Distinct prompt templates per exchange: low values mean the "
                "account fills a few templates over and over.", requires=("prompt",))
def template_reuse(x: ir.Table) -> dict[str, ir.Scalar]:
    return {"n_templates": x.template_id.nunique(), "n_prompts": x.prompt_hash.nunique()}


@account_signal("request_shape", "Tool definitions, images, thinking requests, conversation depth "
                "and token ratio: how the account uses the API.")
def request_shape(x: ir.Table) -> dict[str, ir.Scalar]:
    return {
        "tool_share": _share(x.n_tools > 0),
        "image_share": _share(x.has_image),
        "thinking_share": _share(x.thinking),
        "followup_share": _share(x.n_messages > 2),
        "mean_messages": x.n_messages.mean(),
        "output_input_ratio": (x.output_tokens.sum().cast("float64")
                               / ibis.greatest(x.input_tokens.sum(), 1).cast("float64")),
    }


@account_signal("network_spread", "Distinct IPs, network prefixes, ASNs and user agents used.")
def network_spread(x: ir.Table) -> dict[str, ir.Scalar]:
    return {"n_ips": x.ip.nunique(), "n_prefixes": x.ip_prefix.nunique(),
            "n_asns": x.asn.nunique(), "n_user_agents": x.user_agent.nunique()}


@account_signal("timing_regularity", "Inter-arrival regularity (coefficient of variation of "
                "gaps between requests) and hour-of-day spread.", tags=(GAPS,))
def timing_regularity(x: ir.Table) -> dict[str, ir.Scalar]:
    # Rounded to the microsecond: the engine's threads add the gaps in varying order, and
    # the same input must give the same bytes.
    return {"gap_mean": x.gap_s.mean().round(6), "gap_std": x.gap_s.std().round(6),
            "n_hours_of_day": x.ts.hour().nunique(),
            "n_weekdays": x.ts.day_of_week.index().nunique()}
