"""The capability category of an exchange (the contract's nine categories).

Structural evidence first (an image, tool definitions, a grading request), then
keyword families; the first matching rule wins. Measured on the public prompt sets
in docs/signals.md.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from distillguard.signals.registry import exchange_signal
from distillguard.signals.text import GRADING_PATTERN, SAFE_REWRITE_PATTERN, _text

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
SAFETY_PATTERN = (
    SAFE_REWRITE_PATTERN + r"|\b(weapon|bomb|explosive|drugs?|narcotic|hack(ing)?|malware"
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


@exchange_signal("capability", "Capability category of the exchange (coding, agentic tool use, "
                 "reasoning/math, vision, grading/reward, safety-sensitive, writing, knowledge "
                 "Q&A, other chat).", requires=(), default="chat_other")
def capability(t: ir.Table) -> ir.Value:
    text = _text(t) + " " + t.system_prompt.fill_null("")
    has_image = t.has_image.fill_null(False)
    n_tools = t.tool_names.length().fill_null(0)
    cot = text.re_search(
        r"(?i)step[- ]by[- ]step|show (your|the) (work|steps|reasoning)|chain[- ]of[- ]thought")
    return ibis.cases(
        (has_image, "vision"),
        (text.re_search(GRADING_PATTERN), "grading_reward"),
        (n_tools > 0, "agentic_tool_use"),
        (text.re_search(SAFETY_PATTERN), "safety_sensitive"),
        (text.re_search(AGENTIC_PATTERN), "agentic_tool_use"),
        (text.re_search(CODING_PATTERN), "coding"),
        (cot | text.re_search(MATH_PATTERN), "reasoning_math"),
        (text.re_search(WRITING_PATTERN), "writing"),
        (text.re_search(QA_PATTERN), "knowledge_qa"),
        else_="chat_other",
    )
