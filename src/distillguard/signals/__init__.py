"""Detector signals: small registered units, each with a name, a description and the
columns it needs, so a run can skip what the input cannot support and say why."""
