"""Synthetic internet: autonomous systems by kind, their address blocks, countries and time zones.

Every ASN kind is used by benign populations too (VPN users and developers sit on hosting
ASNs, apps on clouds), so no network value on its own marks an attacker.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# (asn, country, kind). Kinds: residential, mobile, cloud, hosting, campus.
ASNS: tuple[tuple[int, str, str], ...] = (
    (7922, "US", "residential"), (7018, "US", "residential"), (701, "US", "residential"),
    (20115, "US", "residential"), (22773, "US", "residential"), (2856, "GB", "residential"),
    (5089, "GB", "residential"), (3320, "DE", "residential"), (3209, "DE", "residential"),
    (3215, "FR", "residential"), (12322, "FR", "residential"), (24560, "IN", "residential"),
    (55836, "IN", "residential"), (28573, "BR", "residential"), (18881, "BR", "residential"),
    (812, "CA", "residential"), (577, "CA", "residential"), (2516, "JP", "residential"),
    (4713, "JP", "residential"), (4766, "KR", "residential"), (9318, "KR", "residential"),
    (9506, "SG", "residential"), (4657, "SG", "residential"), (4760, "HK", "residential"),
    (9269, "HK", "residential"), (3462, "TW", "residential"), (1221, "AU", "residential"),
    (1136, "NL", "residential"), (3352, "ES", "residential"), (3269, "IT", "residential"),
    (5617, "PL", "residential"), (8151, "MX", "residential"), (29465, "NG", "residential"),
    (33771, "KE", "residential"), (9121, "TR", "residential"), (7552, "VN", "residential"),
    (7713, "ID", "residential"), (4788, "MY", "residential"),
    (21928, "US", "mobile"), (22394, "US", "mobile"), (45609, "IN", "mobile"),
    (26599, "BR", "mobile"), (12576, "GB", "mobile"), (9644, "KR", "mobile"),
    (16509, "US", "cloud"), (14618, "US", "cloud"), (15169, "US", "cloud"),
    (396982, "US", "cloud"), (8075, "US", "cloud"), (31898, "US", "cloud"),
    (16509, "DE", "cloud"), (8075, "NL", "cloud"), (396982, "SG", "cloud"),
    (14061, "US", "hosting"), (24940, "DE", "hosting"), (16276, "FR", "hosting"),
    (63949, "US", "hosting"), (20473, "US", "hosting"), (9009, "GB", "hosting"),
    (60068, "GB", "hosting"), (51167, "DE", "hosting"), (36352, "US", "hosting"),
    (62240, "GB", "hosting"), (14061, "SG", "hosting"), (20473, "JP", "hosting"),
    (87, "US", "campus"), (786, "GB", "campus"), (680, "DE", "campus"),
)
ASN_NUM = np.array([a for a, _, _ in ASNS], dtype=np.int64)
ASN_COUNTRY = np.array([c for _, c, _ in ASNS])
ASN_KIND = np.array([k for _, _, k in ASNS])
KINDS = ("residential", "mobile", "cloud", "hosting", "campus")

# Country -> (weight among API users, UTC offset in hours of its main population).
COUNTRIES: dict[str, tuple[float, float]] = {
    "US": (30, -6), "IN": (9, 5.5), "GB": (6, 0), "DE": (5, 1), "FR": (3, 1), "BR": (4, -3),
    "CA": (3, -5), "JP": (3, 9), "KR": (3, 9), "SG": (2, 8), "HK": (2, 8), "TW": (1.5, 8),
    "AU": (2, 10), "NL": (1.5, 1), "ES": (2, 1), "IT": (2, 1), "PL": (1.5, 1), "MX": (2, -6),
    "NG": (1, 1), "KE": (0.7, 3), "TR": (1, 3), "VN": (1.2, 7), "ID": (1.5, 7), "MY": (1, 8),
}
COUNTRY_CODES = np.array(list(COUNTRIES))
COUNTRY_WEIGHTS = np.array([w for w, _ in COUNTRIES.values()]) / sum(
    w for w, _ in COUNTRIES.values())
COUNTRY_TZ = np.array([tz for _, tz in COUNTRIES.values()])

# Each ASN row owns one /16 (the block's first two octets); hosts are drawn inside it.
_FIRST = np.array([o for o in range(23, 224) if o not in (100, 127, 169, 172, 192, 198, 203)])
ASN_BLOCK = (
    (_FIRST[(np.arange(len(ASNS)) * 7) % len(_FIRST)].astype(np.uint32) << 24)
    | (((np.arange(len(ASNS)) * 37 + 11) % 256).astype(np.uint32) << 16)
)


def asn_rows(kind: str, country: str | None = None) -> np.ndarray:
    """Indices into ASNS of one kind, preferring the given country when it has any."""
    rows = np.flatnonzero(np.char.equal(ASN_KIND, kind))
    if country is not None:
        local = rows[ASN_COUNTRY[rows] == country]
        if len(local):
            return local
    return rows


def random_hosts(rng: np.random.Generator, asn_row: np.ndarray) -> np.ndarray:
    """A random host address (uint32) inside each given ASN row's block."""
    host = rng.integers(256, 65534, size=len(asn_row), dtype=np.uint32)
    return ASN_BLOCK[asn_row] | host


def ip_strings(ips: np.ndarray) -> pa.Array:
    """Dotted-quad strings for uint32 addresses, built column-wise (no per-row Python)."""
    ips = ips.astype(np.uint32)
    octets = [pa.array((ips >> s) & 0xFF).cast(pa.string()) for s in (24, 16, 8, 0)]
    return pc.binary_join_element_wise(*octets, ".")
