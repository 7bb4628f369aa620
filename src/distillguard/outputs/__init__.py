"""Run outputs a third party can check: HTML report, Markdown summary, STIX bundle, CSV."""
