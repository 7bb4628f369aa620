"""indicators.stix.json: a STIX 2.1 bundle other providers and CTI platforms can import.

Mapping (docs/report.md has the table): one `campaign` per detected campaign, each
`attributed-to` its own unattributed `intrusion-set` (we do not claim two campaigns share
an operator), both `uses` an `attack-pattern` referencing MITRE ATLAS AML.T0024.002;
`indicator`s (IP, CIDR, ASN, sign-up e-mail domain, user agent) `indicates` the
campaigns they were seen in; one `sighting` per campaign carries the exchange count and
first/last seen; payment fingerprints and prompt templates ride as custom properties.

Ids are uuid5 from a namespace of the provider's name and the campaign id or pattern, and
timestamps come from the run, so the same run gives a byte-identical bundle.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import stix2

from distillguard import __version__
from distillguard.errors import InputError
from distillguard.outputs.view import RunView

NAMESPACE = uuid.UUID("5b0c7f0e-3d56-4a38-9a8e-0d6e6c2b7a11")
ATLAS_ID = "AML.T0024.002"
ATLAS_URL = "https://atlas.mitre.org/techniques/AML.T0024.002"
TLP = {"white": stix2.TLP_WHITE, "green": stix2.TLP_GREEN, "amber": stix2.TLP_AMBER,
       "red": stix2.TLP_RED}
USER_AGENT_PATH = "network-traffic:extensions.'http-request-ext'.request_header.'User-Agent'"


def _lit(value: str) -> str:
    """A STIX pattern string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ip_pattern(value: str, redacted: bool, file: str) -> tuple[str, str]:
    """(pattern, label) for one address or CIDR; a hashed value matches a custom property."""
    if redacted:
        lit = _lit(value)
        return (f"[ipv4-addr:x_distillguard_hmac = {lit}] OR "
                f"[ipv6-addr:x_distillguard_hmac = {lit}]", "network address (keyed hash)")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise InputError(f"invalid IP or CIDR indicator {value!r}", file=file,
                         column="indicators") from exc
    kind = f"ipv{net.version}-addr"
    if "/" in value:
        return f"[{kind}:value ISSUBSET {_lit(str(net))}]", f"IPv{net.version} network {net}"
    return f"[{kind}:value = {_lit(str(net.network_address))}]", f"IPv{net.version} address"


def _indicator_specs(c: dict[str, Any], redacted: bool, file: str
                     ) -> Iterable[tuple[str, str, str]]:
    """(pattern, kind, value) for every indicator of one campaign."""
    ind = c.get("indicators") or {}
    for key in ("ips", "cidrs"):
        for v in ind.get(key) or []:
            pattern, label = _ip_pattern(str(v), redacted, file)
            yield pattern, label, str(v)
    for asn in ind.get("asns") or []:
        yield f"[autonomous-system:number = {int(asn)}]", "autonomous system", f"AS{int(asn)}"
    for dom in ind.get("email_domains") or []:
        prop = "x_distillguard_domain_hmac = " if redacted else "value LIKE "
        value = _lit(str(dom)) if redacted else _lit(f"%@{dom}")
        yield f"[email-addr:{prop}{value}]", "sign-up e-mail domain", str(dom)
    for ua in ind.get("user_agents") or []:
        yield f"[{USER_AGENT_PATH} = {_lit(str(ua))}]", "client user agent", str(ua)


def _ts(value: Any) -> datetime:
    text = str(value).replace("Z", "+00:00")
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _campaign_description(c: dict[str, Any], version: str) -> str:
    caps = sorted((c.get("capabilities") or {}).items(), key=lambda kv: -float(kv[1]))[:3]
    cap_text = ", ".join(f"{k} {float(v):.0%}" for k, v in caps) or "unknown"
    sig_text = "; ".join(
        f"{s.get('name')}={s.get('value')}" for s in (c.get("signals") or [])[:5]
    ) or "none recorded"
    return (
        f"Coordinated harvesting of model outputs (distillation) by {c['n_accounts']} "
        f"accounts over {c['n_exchanges']} exchanges, {c['first_seen']} to {c['last_seen']}. "
        f"Capability mix: {cap_text}. Evidence: {sig_text}. Detection score {c['score']} "
        f"(distillguard {version})."
    )


def build_bundle(view: RunView) -> stix2.Bundle:
    """The whole bundle for the run's campaigns."""
    cfg = view.cfg
    version = str(view.run.get("distillguard_version", __version__))
    file = str(view.rd.path / "campaigns.json")
    ns = uuid.uuid5(NAMESPACE, str(cfg["provider_name"]))

    def sid(kind: str, *parts: str) -> str:
        return f"{kind}--{uuid.uuid5(ns, '|'.join((kind, *parts)))}"

    try:
        tlp = TLP[str(cfg["tlp"]).lower()]
    except KeyError as exc:
        raise InputError(f"report.tlp must be one of {', '.join(TLP)}") from exc
    stamps = [_ts(c["last_seen"]) for c in view.campaigns]
    created = _ts(view.run["created_at"]) if view.run.get("created_at") else max(
        stamps, default=datetime(1970, 1, 1, tzinfo=UTC))
    identity = stix2.Identity(
        id=sid("identity", "provider"), name=str(cfg["provider_name"]),
        identity_class="organization", created=created, modified=created,
        description="The API provider that observed the traffic and issued these indicators.",
        object_marking_refs=[tlp.id],
    )
    common = {"created": created, "modified": created, "created_by_ref": identity.id,
              "object_marking_refs": [tlp.id]}
    attack = stix2.AttackPattern(
        id=sid("attack-pattern", ATLAS_ID), name="Extract AI Model via AI Inference API",
        description=(
            "Querying a model's inference API at scale to collect its outputs and train a "
            "functionally equivalent model (distillation / model extraction)."
        ),
        external_references=[stix2.ExternalReference(
            source_name="mitre-atlas", external_id=ATLAS_ID, url=ATLAS_URL)],
        **common,
    )
    objects: list[Any] = [tlp, identity, attack]
    indicators: dict[str, dict[str, Any]] = {}
    relations: list[Any] = []
    for c in view.campaigns:
        cid = str(c["campaign_id"])
        ind = c.get("indicators") or {}
        first, last = _ts(c["first_seen"]), _ts(c["last_seen"])
        campaign = stix2.Campaign(
            id=sid("campaign", cid), name=f"Distillation campaign {cid}",
            description=_campaign_description(c, version), first_seen=first, last_seen=last,
            objective="Harvest model outputs to train a competing model.",
            confidence=round(float(c["score"]) * 100),
            x_distillguard_campaign_id=cid,
            x_distillguard_n_accounts=int(c["n_accounts"]),
            x_distillguard_n_exchanges=int(c["n_exchanges"]),
            x_distillguard_capabilities={k: float(v) for k, v in
                                         (c.get("capabilities") or {}).items()},
            x_distillguard_payment_fingerprints=[str(v) for v in
                                                 ind.get("payment_fingerprints") or []],
            x_distillguard_prompt_templates=[str(v) for v in ind.get("prompt_templates") or []],
            allow_custom=True, **common,
        )
        actor = stix2.IntrusionSet(
            id=sid("intrusion-set", cid), name=f"Unattributed operator of {cid}",
            description=(
                f"The operator behind distillation campaign {cid}. Deliberately unattributed: "
                "the evidence links the accounts to one another, not to a named organisation."
            ),
            first_seen=first, last_seen=last, goals=["Train a model on harvested outputs"],
            **common,
        )
        objects += [campaign, actor]
        relations += [
            stix2.Relationship(
                id=sid("relationship", cid, "attributed-to"), source_ref=campaign.id,
                relationship_type="attributed-to", target_ref=actor.id, **common),
            stix2.Relationship(
                id=sid("relationship", cid, "campaign-uses"), source_ref=campaign.id,
                relationship_type="uses", target_ref=attack.id, **common),
            stix2.Relationship(
                id=sid("relationship", cid, "actor-uses"), source_ref=actor.id,
                relationship_type="uses", target_ref=attack.id, **common),
            stix2.Sighting(
                id=sid("sighting", cid), sighting_of_ref=campaign.id,
                where_sighted_refs=[identity.id], count=min(int(c["n_exchanges"]), 999_999_999),
                first_seen=first, last_seen=last,
                description=f"{c['n_exchanges']} exchanges from {c['n_accounts']} accounts.",
                **common),
        ]
        for pattern, label, value in _indicator_specs(c, view.redacted, file):
            spec = indicators.setdefault(pattern, {"label": label, "value": value,
                                                   "from": first, "campaigns": []})
            spec["from"] = min(spec["from"], first)
            spec["campaigns"].append(cid)
    for pattern, spec in indicators.items():
        label = spec["label"]
        indicator = stix2.Indicator(
            id=sid("indicator", pattern), name=f"{label}: {spec['value']}",
            description=(f"{label[0].upper()}{label[1:]} used by the accounts of distillation "
                         f"campaign(s) {', '.join(spec['campaigns'])}."),
            pattern=pattern, pattern_type="stix", valid_from=spec["from"],
            indicator_types=["malicious-activity", "attribution"], **common,
        )
        objects.append(indicator)
        relations += [
            stix2.Relationship(
                id=sid("relationship", pattern, cid), source_ref=indicator.id,
                relationship_type="indicates", target_ref=sid("campaign", cid), **common)
            for cid in spec["campaigns"]
        ]
    bundle_id = sid("bundle", str(view.run.get("created_at", "")),
                    *(str(c["campaign_id"]) for c in view.campaigns))
    return stix2.Bundle(objects=objects + relations, id=bundle_id, allow_custom=True)


def write_stix(view: RunView, path: Path) -> Path:
    """Write the bundle, indented. Objects are serialised one by one: stix2's `pretty=True`
    re-sorts keys with a search that grows with the square of the bundle's size."""
    bundle = build_bundle(view)
    doc = {"type": "bundle", "id": bundle.id,
           "objects": [json.loads(o.serialize()) for o in bundle.objects]}
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return path

