"""The capability category of an exchange (the contract's nine categories).

Structural evidence first (an image, tool definitions, a grading request), then
keyword families; the first matching rule wins (the engine evaluates a rule only on the
rows no earlier rule matched). The patterns read the bounded cue text
(`text.cue_text`). Measured on the public prompt sets in docs/signals.md.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from distillguard.signals.registry import exchange_signal
from distillguard.signals.text import GRADING_PATTERN, SAFE_REWRITE_PATTERN, cue_text

AGENTIC_PATTERN = (
    r"(?i)\b(tool call|function call|call the (tool|function|api)|use the (tool|function)s?"
    r"|available (tools|functions)|function_call|tool_use|tool_calls|json schema"
    r"|browse the web|search the web|execute the command|run the command|agent)\b"
)
CODING_PATTERN = (
    r"(?i)```|\bdef \w+\(|\bfunction\b|\bclass \w+|\bcode\b|\bpython\b|javascript|typescript"
    r"|\bjava\b|c\+\+|\brust\b|golang|\bsql\b|\bbug\b|\bcompile|stack ?trace|traceback"
    r"|exception|\bregex|\bapi\b|refactor|unit tests?|algorithm|implement|debug|script"
    r"|\bhtml\b|\bcss\b|react|docker|kubernetes|bash|linux command|git \w+|\bnpm\b|\bpip\b"
)
# Safety-sensitive: a safe-rewrite request (the `safe_rewrite` signal's own expression,
# which the engine computes once for both) or one of these words.
SAFETY_KEYWORDS = (
    r"(?i)\b(weapon|bomb|explosive|drugs?|narcotic|hack(ing)?|malware"
    r"|ransomware|phishing|suicide|self-harm|kill|murder|steal|poison|illegal|extremis\w*"
    r"|terroris\w*|launder\w*|counterfeit|jailbreak|bypass (the )?(filter|safety))\b"
)
MATH_PATTERN = (
    r"(?i)\b(solve|calculate|compute|equation|integral|derivative|probability|proof|prove"
    r"|theorem|how many|how much|arithmetic|algebra|geometry|math\w*|logic puzzle|riddle"
    r"|percent|average|ratio|sum of|product of)\b|\d+ ?[-+*/×÷^] ?\d+"
)
WRITING_PATTERN = (
    r"(?i)\b(write|draft|compose|rewrite|edit|proofread|summari[sz]e|summary|translate|poem"
    r"|story|essay|e-?mail|letter|blog|article|cover letter|slogan|tweet|headline|lyrics"
    r"|outline|paragraph|tone)\b"
)
QA_PATTERN = (
    r"(?i)^\s*(what|who|when|where|why|how|which|is|are|does|do|can|could|explain|describe"
    r"|define|tell me|list|compare)\b|\?\s*$"
)


TEXT_CAPABILITY_COLUMN = "_text_capability"


def text_capability(text: ir.StringValue) -> ir.StringValue:
    """The category the text alone gives: the keyword rules in the cascade's order. (A
    function of the text only, so the pipeline computes it once per distinct text.)"""
    cot = text.re_search(
        r"(?i)step[- ]by[- ]step|show (your|the) (work|steps|reasoning)|chain[- ]of[- ]thought")
    return ibis.cases(
        (text.re_search(GRADING_PATTERN), "grading_reward"),
        (text.re_search(SAFE_REWRITE_PATTERN) | text.re_search(SAFETY_KEYWORDS),
         "safety_sensitive"),
        (text.re_search(AGENTIC_PATTERN), "agentic_tool_use"),
        (text.re_search(CODING_PATTERN), "coding"),
        (cot | text.re_search(MATH_PATTERN), "reasoning_math"),
        (text.re_search(WRITING_PATTERN), "writing"),
        (text.re_search(QA_PATTERN), "knowledge_qa"),
        else_="chat_other",
    )


@exchange_signal("capability", "Capability category of the exchange (coding, agentic tool use, "
                 "reasoning/math, vision, grading/reward, safety-sensitive, writing, knowledge "
                 "Q&A, other chat).", requires=(), default="chat_other")
def capability(t: ir.Table) -> ir.Value:
    # Image first, then a grading request, then tool definitions, then the text's own
    # category: the cascade's order with the text rules computed in one place.
    text_cat = (t[TEXT_CAPABILITY_COLUMN] if TEXT_CAPABILITY_COLUMN in t.columns
                else text_capability(cue_text(t)))
    return ibis.cases(
        (t.has_image.fill_null(False), "vision"),
        (text_cat == "grading_reward", "grading_reward"),
        (t.tool_names.length().fill_null(0) > 0, "agentic_tool_use"),
        else_=text_cat,
    )
