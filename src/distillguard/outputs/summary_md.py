"""campaigns.md: a plain summary per campaign, to paste into a written complaint or letter."""

from __future__ import annotations

from pathlib import Path

from distillguard import __version__
from distillguard.outputs.explain import reading_guide
from distillguard.outputs.templating import jinja_env
from distillguard.outputs.view import RunView


def render_markdown(view: RunView, enforcement_counts: dict[str, int]) -> str:
    return jinja_env(autoescape=False).get_template("campaigns.md.j2").render(
        run=view.run, cfg=view.cfg, campaigns=view.campaigns, redacted=view.redacted,
        enforcement=enforcement_counts, version=__version__,
        generated=view.run.get("created_at"),
        guide=reading_guide(str(s["name"]) for c in view.campaigns
                            for s in c.get("signals") or [] if s.get("value") != 0),
        provenance=view.provenance,
        templates_of={str(c["campaign_id"]): view.templates(str(c["campaign_id"]))
                      for c in view.campaigns},
    )


def write_markdown(view: RunView, path: Path, enforcement_counts: dict[str, int]) -> Path:
    path.write_text(render_markdown(view, enforcement_counts), "utf-8")
    return path
