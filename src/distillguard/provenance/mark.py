"""Marking: a thin layer over transformers' own green-list watermark (Kirchenbauer et al.).

Nothing here re-implements the sampler. `watermarking_config` feeds `model.generate`;
`logits_processor` is the same object a serving stack calls per request for flagged
accounts. vLLM mapping: a per-request logits processor there is a callable
``(output_token_ids, logits) -> logits`` (v0 ``SamplingParams.logits_processors``) or a
batch-level processor class reading per-request ``SamplingParams.extra_args`` (v1);
`request_callable` adapts ours to the first form, and a v1 class applies the same
callable row by row for the requests whose extra_args carry a key id.

torch/transformers are imported lazily so the rest of the CLI stays fast without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distillguard.errors import InputError
from distillguard.provenance.keys import WatermarkKey, derive_key

if TYPE_CHECKING:
    import torch
    from transformers import WatermarkingConfig, WatermarkLogitsProcessor


@dataclass(frozen=True)
class WatermarkParams:
    """Everything besides the key that fixes the green lists; must match generation exactly.

    `vocab_size` is the generator's logits width (``config.vocab_size``), which may exceed
    the tokenizer's length: a different value gives different green lists.
    """

    vocab_size: int
    greenlist_ratio: float = 0.25
    bias: float = 3.0
    seeding_scheme: str = "lefthash"
    context_width: int = 1

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise InputError(f"vocab_size must be at least 2, got {self.vocab_size}")
        if not 0.0 < self.greenlist_ratio < 1.0:
            raise InputError(f"greenlist_ratio must be in (0, 1), got {self.greenlist_ratio}")
        if self.seeding_scheme not in ("lefthash", "selfhash"):
            raise InputError(f"seeding_scheme must be lefthash or selfhash, "
                             f"got {self.seeding_scheme!r}")
        if self.context_width < 1:
            raise InputError(f"context_width must be >= 1, got {self.context_width}")

    @property
    def gamma(self) -> float:
        """The exact null probability of green: transformers truncates the list size."""
        return int(self.vocab_size * self.greenlist_ratio) / self.vocab_size

    @classmethod
    def from_config(cls, section: Mapping[str, Any], vocab_size: int) -> WatermarkParams:
        """Params from the `[provenance]` config section and the generator's vocab size."""
        return cls(vocab_size=vocab_size, greenlist_ratio=float(section["greenlist_ratio"]),
                   bias=float(section["bias"]), seeding_scheme=str(section["seeding_scheme"]),
                   context_width=int(section["context_width"]))


def watermarking_config(key: WatermarkKey, params: WatermarkParams) -> WatermarkingConfig:
    """The `WatermarkingConfig` to pass to ``model.generate(watermarking_config=...)``."""
    from transformers import WatermarkingConfig

    return WatermarkingConfig(greenlist_ratio=params.greenlist_ratio, bias=params.bias,
                              hashing_key=key.hashing_key, seeding_scheme=params.seeding_scheme,
                              context_width=params.context_width)


def logits_processor(key: WatermarkKey, params: WatermarkParams,
                     device: str = "cpu") -> WatermarkLogitsProcessor:
    """transformers' own processor for this key: the serving hook and the scorer's oracle."""
    return watermarking_config(key, params).construct_processor(params.vocab_size, device)


def processor_for_account(account_id: str, flagged: Mapping[str, str], secret: bytes,
                          params: WatermarkParams,
                          device: str = "cpu") -> WatermarkLogitsProcessor | None:
    """The hook a serving stack calls per request: a keyed processor for flagged accounts.

    `flagged` maps account id -> key id (its campaign's or cluster's); unflagged accounts
    get None and are served unmarked.
    """
    key_id = flagged.get(account_id)
    return None if key_id is None else logits_processor(derive_key(secret, key_id), params,
                                                        device)


def request_callable(processor: WatermarkLogitsProcessor, prompt_token_ids: Sequence[int]
                     ) -> Callable[[Sequence[int], torch.Tensor], torch.Tensor]:
    """Adapt a processor to vLLM's per-request ``(output_token_ids, logits) -> logits``.

    The prompt is prepended so the first generated token is seeded exactly as in
    ``generate``; `logits` is the 1-D row of this request.
    """
    import torch

    prompt = list(prompt_token_ids)

    def apply(output_token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        ids = torch.tensor([prompt + list(output_token_ids)], dtype=torch.long,
                           device=logits.device)
        return processor(ids, logits.unsqueeze(0))[0]

    return apply


def generate_marked(model: Any, tokenizer: Any, prompts: Sequence[str], key: WatermarkKey | None,
                    params: WatermarkParams, *, max_new_tokens: int = 64,
                    batch_size: int = 32, seed: int = 0,
                    do_sample: bool = True) -> list[list[int]]:
    """Completions (token ids, prompt removed) for `prompts`; watermarked unless key is None.

    Prompts are left-padded so every completion starts right after its own prompt.
    """
    import torch

    tokenizer.padding_side = "left"
    wm = None if key is None else watermarking_config(key, params)
    torch.manual_seed(seed)
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt",
                        padding=True, add_special_tokens=False)
        width = enc["input_ids"].shape[1]
        limit = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", None)
        if limit is not None and width + max_new_tokens > limit:
            raise InputError(f"a prompt of {width} tokens plus {max_new_tokens} new tokens "
                             f"exceeds the model's {limit} positions")
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=do_sample, max_new_tokens=max_new_tokens,
                                 watermarking_config=wm, top_k=0,
                                 pad_token_id=tokenizer.pad_token_id)
        for row in gen[:, width:].tolist():
            out.append(_strip_after_eos(row, tokenizer.eos_token_id))
    return out


def _strip_after_eos(ids: list[int], eos_id: int | None) -> list[int]:
    """Cut a generated row at its first EOS (the rest is padding)."""
    if eos_id is not None and eos_id in ids:
        return ids[:ids.index(eos_id)]
    return ids
