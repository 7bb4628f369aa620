"""distillguard: detect, attribute and counter distillation attacks in LLM API traffic."""

__version__ = "0.1.0"
