"""Text signals over the prompt: template skeleton, near-duplicate families, and the cues
of extraction-style requests (chain-of-thought elicitation, rubric grading, safe rewrites).

All of it is Ibis expressions (regexes in the common subset of RE2 and Java), so the
same definitions run in DuckDB and in Spark and touch each prompt once, in the engine.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from distillguard.engine.portable import stable_hash
from distillguard.errors import InputError
from distillguard.signals.registry import TEXT, exchange_signal

# Slots that vary between fills of one template, replaced by placeholders (order matters:
# code blocks and URLs before numbers, multi-word proper names before lower-casing).
SKELETON_RULES: tuple[tuple[str, str], ...] = (
    (r"```[\s\S]*?```", " <code> "),
    (r"https?://[^\s)>\]]+", " <url> "),
    (r"[\w.+-]+@[\w-]+(\.[\w-]+)+", " <email> "),
    (r"\b[A-Z][a-z]+( [A-Z][a-z]+)+\b", " <name> "),
    (r"\"[^\"\n]{0,400}\"|“[^”\n]{0,400}”|«[^»\n]{0,400}»", " <quote> "),
    (r"[-+]?(0x[0-9a-fA-F]+|\d+([.,:/]\d+)*%?)", " <n> "),
)
# After lower-casing, every run of anything but letters and placeholder brackets becomes
# one space. A regex replacement costs per match, so the fold leaves alone the single
# spaces between words (measured: the former `[^a-z<> ]+` then `\s+`, which matched every
# space, was two thirds of the skeleton's cost); the result is the same string.
SKELETON_FOLD = r"[^a-z<>]*[^a-z<> ][^a-z<>]*| {2,}"
SKELETON_CHARS = 400  # only the head of a prompt decides its template: bounded cost per row
# The cue and capability regexes read a bounded head and tail of the prompt and of the
# system prompt (where judge and chain-of-thought templates put their instructions), so
# the cost per row is bounded whatever the prompt's length.
CUE_HEAD_CHARS = 4000
CUE_TAIL_CHARS = 1000
STOPWORDS = ("the", "and", "for", "with", "that", "this", "are", "was", "you", "your", "from",
             "have", "has", "not", "but", "can", "all", "its", "our", "into", "than", "then",
             "them", "they", "their", "there", "what", "which", "who", "will", "would", "about",
             "please", "<n>", "<name>", "<quote>", "<url>", "<code>", "<email>")
MINHASH_PRIME = 2_147_483_647  # 2^31 - 1: products of two residues stay inside BIGINT

COT_PATTERN = (
    r"(?i)step[- ]by[- ]step|show (all |me )?(of )?(your|the) (work|steps|reasoning|thinking)"
    r"|(explain|walk (me )?through|detail|describe|write out|lay out|spell out|reveal|show)"
    r" (your|the|each|every|all|all of your)? ?(full |complete |entire |detailed )?"
    r"(reasoning|thought process|thinking|intermediate steps|chain of thought|rationale)"
    r"|chain[- ]of[- ]thought|reasoning (trace|process|steps|chain)"
    r"|(internal|hidden|private|inner) (reasoning|thoughts|monologue|deliberation)"
    r"|think (it |this )?through|let'?s think|think carefully|think out loud"
    r"|reconstruct (your|the) (reasoning|thinking|thought)|<think>|scratchpad"
    r"|before (giving|answering|you answer|the final answer)[^.]{0,40}(reason|think|explain)"
    r"|logical steps?|each (inference|deduction)|chain of (logic|reasoning|inference)"
    r"|line of reasoning|reason (carefully|it out|it through|this through|step)"
    r"|(show|explain|justify) (your|all|all of your|the) (work(ings)?|logic)\b"
    r"|(your|a|the) (full|complete|detailed|step-by-step) (rationale|derivation)"
    # The same requests in the languages harvesters also use (the prompts need not be
    # English): step by step; your reasoning / thought process; reason (verb).
    r"|paso a paso|passo a passo|passo (dopo|per) passo|étape par étape|pas à pas"
    r"|schritt für schritt|krok po kroku|adım adım|stap voor stap"
    r"|(tu|su|seu|teu|tuo|ton|votre|dein|deinen) (razonamiento|raciocínio"
    r"|ragionamento|raisonnement|gedankengang|denkprozess|proceso de pensamiento)"
    r"|\b(razona|raciocine|ragiona|raisonne|begründe)\b|pensemos|piensa paso"
    r"|шаг за шагом|пошагов|по шагам|рассужда|ход (решения|рассуждений|мысли)"
    r"|一步一步|一步步|逐步|分步|思路|推理过程|思考过程|解题过程|推导过程|详细推导"
    r"|ステップバイステップ|段階的に|順を追って|推論過程|思考過程|단계별|단계적으로|차근차근"
    r"|추론 과정|사고 과정"
)
GRADING_PATTERN = (
    r"(?i)\b(score|rate|grade|evaluate|judge|assess)\b (the|this|each|following|a|an"
    r"|both|these|their)? ?(following )?(ai |assistant'?s? |model'?s? |candidate )?(response|answer"
    r"|output|completion|reply|replies|responses|answers|submission|essay|summary|quality)"
    r"|on a scale (of|from) \d|\[\[rating\]\]|\[\[[ab]\]\]|which (response|answer|assistant|output)"
    r" (is|was) better|reward model|preference (label|judgment)|impartial judge"
    r"|(score|rating) (of|from|between) \d+ (to|and) \d+|\bscore:|rating:"
    # ... in other languages: which answer is better; rate / score the answer; on a scale.
    r"|(cuál|qué|qual|quelle|welche) (de las dos |das duas |des deux )?(respuesta|resposta"
    r"|réponse|antwort) (es|é|est|ist) (la )?(mejor|melhor|meilleure|besser)"
    r"|compar\w* (las|los|as|os|les) (dos |duas |deux )?(respuestas|respostas|réponses)"
    r"|(califica|puntúa|evalúa|avalie|évaluez?|notez?|bewerte\w*) (la |a |esta |cette |die "
    r"|diese )?(respuesta|resposta|réponse|antwort)"
    r"|(escala|échelle|skala) (del?|von|de) \d|шкал\w* от \d"
    r"|(какой|какая|который) (из )?(двух )?(ответ|ответов)\w* лучше|сравни\w* (два )?ответ"
    r"|оцени\w* (ответ|по шкале)|哪个回答更好|哪个答案更好|哪一个更好|评分|打分"
    r"|どちらの回答|採点|評価してください"
)
# A rubric is a grading request when what it grades is a model's output: reward-model
# data is grades of responses. Quality teams grade their own people's calls, tickets
# and essays against rubrics too.
RUBRIC_PATTERN = r"(?i)\brubric\b"
# "Output" alone is also the imperative of an instruction ("Output the four scores"):
# as a graded thing it is plural, follows an article, or is labelled ("Output (a)").
GRADED_OUTPUT_PATTERN = (r"(?i)\b(responses?|answers?|outputs|completions?|assistant'?s?"
                         r"|model'?s?|ai|chatbot|candidates?|generations?)\b"
                         r"|\b(the|an?|its|their|each|both|this|that|generated) output\b"
                         r"|\boutput (\([a-d1-4]\)|[a-d1-4]:|[1-4]\b)")
SAFE_REWRITE_PATTERN = (
    r"(?i)(rewrite|rephrase|reword|reformulate|paraphrase|transform|turn|convert|sanitize)\b"
    r"[^.]{0,80}\b(safe|safer|harmless|non-harmful|appropriate|policy[- ]compliant|benign"
    r"|acceptable|responsible|non-violent)"
    r"|(safe|safer|sanitized|harmless|policy-compliant) (version|rewrite|rephrasing|alternative"
    r"|framing|wording)|without (violating|breaking) (the |any )?(policy|policies|guidelines|rules)"
)

# A self-contained task in the style of instruction-tuning sets (Alpaca, Code Alpaca,
# Evol-Instruct, GPTeacher): it opens with a capitalised imperative, its first line asks
# no question, and it speaks of nobody (no I, me, my, we, our, us). Users mostly ask
# about their own situation; a harvest of instruction items sends tasks. English only.
TASK_VERBS = (
    "Add|Analy[sz]e|Arrange|Assess|Brainstorm|Build|Calculate|Categori[sz]e|Change|Choose"
    "|Classify|Combine|Compare|Complete|Compose|Compute|Construct|Convert|Correct|Count"
    "|Create|Critique|Debug|Define|Describe|Design|Detect|Determine|Develop|Discuss|Draft"
    "|Edit|Elaborate|Estimate|Evaluate|Expand|Explain|Extract|Fill|Find|Fix|Formulate"
    "|Generate|Give|Group|Identify|Illustrate|Implement|Improve|Insert|Invent|Label|List"
    "|Make|Match|Modify|Name|Optimi[sz]e|Organi[sz]e|Outline|Paraphrase|Parse|Predict"
    "|Produce|Propose|Provide|Rank|Rate|Rearrange|Recommend|Refactor|Remove|Replace"
    "|Restate|Reverse|Rewrite|Reword|Select|Shorten|Simplify|Solve|Sort|Split|Suggest"
    "|Summari[sz]e|Transform|Translate|Write")
TASK_PATTERN = rf"^\s*(?:{TASK_VERBS})\b[^\n?]*(?:\n|$)"
FIRST_PERSON_PATTERN = r"(?i)\b(i|me|my|mine|i'm|i've|i'd|we|our|us)\b"


def _text(t: ir.Table) -> ir.StringValue:
    return t.prompt.fill_null("")


def bounded(text: ir.StringValue) -> ir.StringValue:
    """The head and tail of a text (all of it when short): what the cue regexes read."""
    keep = CUE_HEAD_CHARS + CUE_TAIL_CHARS
    return ibis.cases((text.length() <= keep, text),
                      else_=text.substr(0, CUE_HEAD_CHARS) + " " + text.right(CUE_TAIL_CHARS))


def cue_text_expr(t: ir.Table) -> ir.StringValue:
    """The bounded prompt, then the bounded system prompt: the text every cue and
    capability regex reads. (The patterns stay case-insensitive: measured, lower-casing
    once and matching case-sensitively was no faster in RE2.)"""
    s = bounded(_text(t))
    if "system_prompt" in t.columns:
        s = s + " " + bounded(t.system_prompt.fill_null(""))
    return s


def skeleton(text: ir.StringValue) -> ir.StringValue:
    """The template a prompt was filled from: slots replaced, case and spacing folded."""
    s = text.substr(0, SKELETON_CHARS)
    for pattern, repl in SKELETON_RULES:
        s = s.re_replace(pattern, repl)
    return s.lower().re_replace(SKELETON_FOLD, " ").strip()


SKELETON_COLUMN = "_skeleton"
CUE_TEXT_COLUMN = "_cue_text"


def with_text_columns(t: ir.Table, present: set[str]) -> ir.Table:
    """The exchanges with the prompt skeleton and cue text added as columns, so that each
    is computed once per row however many signals read it."""
    cols: dict[str, ir.Value] = {}
    if "prompt" in present:
        cols[SKELETON_COLUMN] = skeleton(_text(t))
        cols[CUE_TEXT_COLUMN] = cue_text_expr(t)
    elif "system_prompt" in present:
        cols[CUE_TEXT_COLUMN] = cue_text_expr(t)
    return t.mutate(**cols) if cols else t


def prompt_skeleton(t: ir.Table) -> ir.StringValue:
    """The prompt's skeleton: the precomputed column when the pipeline made one (so the
    regexes run once per prompt), else computed here."""
    return t[SKELETON_COLUMN] if SKELETON_COLUMN in t.columns else skeleton(_text(t))


def cue_text(t: ir.Table) -> ir.StringValue:
    """The cue text: the precomputed column when the pipeline made one, else computed."""
    return t[CUE_TEXT_COLUMN] if CUE_TEXT_COLUMN in t.columns else cue_text_expr(t)


def template_hash(sk: ir.StringValue) -> ir.IntegerValue:
    """Id of a skeleton; NULL for skeletons too short to name a template."""
    return ibis.cases((sk.length() < 8, ibis.null("int64")), else_=stable_hash(sk))


@exchange_signal("template_id", "Hash of the prompt's template skeleton (numbers, names, "
                 "quotes, code, URLs normalised): identical templates across accounts.",
                 requires=("prompt",), tags=(TEXT,))
def template_id(t: ir.Table) -> ir.Value:
    return template_hash(prompt_skeleton(t))


def system_template_id(system_prompt: ir.StringValue) -> ir.IntegerValue:
    """Id of a system prompt's template (NULL read as the empty prompt)."""
    return template_hash(skeleton(system_prompt.fill_null("")))


def band_count(cfg: dict) -> int:
    """Template-family keys per exchange: the skeleton's head and tail, plus LSH bands
    (at most 6: each key keeps its slot in the low three bits)."""
    bands = int(cfg["templates"]["minhash_perms"]) // int(cfg["templates"]["band_rows"])
    if not 0 <= bands <= 6:
        raise InputError("[templates] minhash_perms / band_rows must give 0 to 6 bands")
    return 2 + bands


def _edge_key(words: ir.StringValue, slot: int) -> ir.IntegerValue:
    """Key of a skeleton's opening or closing words (NULL when too short to mean much).

    The fixed instruction text of a template usually opens or closes it: these words
    survive slot filling that moves most MinHash minima."""
    return ibis.cases((words.length() < 12, ibis.null("int64")),
                      else_=(stable_hash(words) % (1 << 59)) * 8 + slot)


def minhash_bands(sk: ir.StringValue, perms: int, rows: int) -> list[ir.IntegerValue]:
    """Template-family keys of a skeleton: its opening and closing words, and LSH bands of
    MinHash over its words. Slot-filled and paraphrased variants of one template share
    some of them with high probability; unrelated prompts rarely do."""
    # Whole-match extraction (group 0, no capturing group): RE2 then finds the bounds with
    # its DFA instead of tracking submatches, 4x cheaper here.
    bands = [_edge_key(sk.re_extract(r"^(?:\S+ ){0,5}\S+", 0), 6),
             _edge_key(sk.re_extract(r"(?:\S+ ){0,5}\S+$", 0), 7)]
    if perms // rows == 0:
        return bands
    words = sk.split(" ").filter(
        lambda w: (w.length() >= 3) & ~w.isin(STOPWORDS))
    hashed = words.map(lambda w: stable_hash(w) % MINHASH_PRIME)
    mins = []
    for i in range(perms):
        a, b = 1_103_515_245 + 2 * i * 40_503 + 1, 12_345 + i * 2_654_435
        mins.append(hashed.map(lambda x, a=a, b=b: (x.abs() * a + b) % MINHASH_PRIME).mins())
    for j in range(perms // rows):
        key = mins[j * rows]
        for r in range(1, rows):
            key = key * MINHASH_PRIME + mins[j * rows + r]
        bands.append(((key % (1 << 59)) * 8 + j).cast("int64"))
    return bands


def any_extraction_cue(t: ir.Table) -> ir.BooleanValue:
    """Whether an exchange row (with the three cue columns below) elicits reasoning, asks
    for a grade or for a safe rewrite: what the extraction shares count."""
    return t.cot_elicitation | t.grading_prompt | t.safe_rewrite


@exchange_signal("cot_elicitation", "The prompt or system prompt asks to reveal, reconstruct "
                 "or write out step-by-step or internal reasoning.", requires=("prompt",),
                 default=False,
                 tags=(TEXT,))
def cot_elicitation(t: ir.Table) -> ir.Value:
    return cue_text(t).re_search(COT_PATTERN)


@exchange_signal("grading_prompt", "A reward-model / rubric grading request: score or compare "
                 "responses against criteria.", requires=("prompt",), default=False,
                 tags=(TEXT,))
def grading_prompt(t: ir.Table) -> ir.Value:
    s = cue_text(t)
    return s.re_search(GRADING_PATTERN) | (s.re_search(RUBRIC_PATTERN)
                                           & s.re_search(GRADED_OUTPUT_PATTERN))


@exchange_signal("instruction_task", "A self-contained task in the style of instruction-tuning "
                 "sets (opens with an imperative, asks no question in its first line, speaks "
                 "of nobody): what a harvest of instruction items sends.",
                 requires=("prompt",), default=False, tags=(TEXT,))
def instruction_task(t: ir.Table) -> ir.Value:
    head = bounded(_text(t))
    return head.re_search(TASK_PATTERN) & ~head.re_search(FIRST_PERSON_PATTERN)


@exchange_signal("safe_rewrite", "Asks for a 'safe rewrite' of a sensitive request: harvests "
                 "refusal-boundary behaviour.", requires=("prompt",), default=False,
                 tags=(TEXT,))
def safe_rewrite(t: ir.Table) -> ir.Value:
    return cue_text(t).re_search(SAFE_REWRITE_PATTERN)
