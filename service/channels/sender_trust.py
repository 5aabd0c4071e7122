"""Who sent this email, as far as it can be proven (docs/architecture.md#who-sent-this-email).

A From header is whatever the sender typed. An email counts as from its From address only when:

- a DKIM signature on the raw message verifies (dkimpy, checked here, against the key the signing domain
  publishes in DNS) and its ``d=`` domain is aligned with the From domain — a valid signature of the
  attacker's own domain proves nothing about the patient's address; or
- SPF passed for the envelope sender, as stated by the topmost ``X-Mailgun-Spf`` header, above the first
  ``Received`` header — the one Mailgun prepends — and the envelope domain is aligned with the From domain.
  The same header written further down by the sender is ignored.

Aligned (relaxed, as DMARC): the same domain, or one a subdomain of the other. That needs no public-suffix
list: whoever can publish a DKIM key (or an SPF record) at a domain controls it, and nobody can at a
public suffix such as ``co.uk``.

Runs in the inbound worker, never in a web request: a DKIM check may wait on DNS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dkim

log = logging.getLogger(__name__)

# dkimpy's DNS hook: the TXT record at a name (b"selector._domainkey.example.com."), or None.
DnsLookup = Callable[..., bytes | None]

# Signatures looked at, at most: a message carrying more is not a patient's reply.
MAX_SIGNATURES = 5


@dataclass(frozen=True)
class Trust:
    verified: bool
    method: str | None  # "dkim", "spf", or None
    reason: str  # for staff, naming domains only


def verify_sender(
    *,
    raw: bytes | None,
    headers: Sequence[tuple[str, str]],
    envelope_sender: str,
    from_address: str,
    dns: DnsLookup | None = None,
) -> Trust:
    """Whether the From address is proven (see the module's docstring)."""
    from_domain = domain_of(from_address)
    if not from_domain:
        return Trust(False, None, "no single From address")
    signed = _dkim_domains(raw, dns) if raw else []
    if any(aligned(signer, from_domain) for signer in signed):
        return Trust(True, "dkim", f"DKIM signature of {from_domain} verified")
    if _mailgun_spf_passed(headers) and aligned(domain_of(envelope_sender), from_domain):
        return Trust(True, "spf", f"SPF passed for {domain_of(envelope_sender)}")
    if signed:
        return Trust(False, None, f"DKIM verified for {', '.join(signed)}, not for {from_domain}")
    return Trust(False, None, f"nothing proves the message came from {from_domain}")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().strip(".").lower() if "@" in address else ""


def aligned(one: str, other: str) -> bool:
    if not one or not other:
        return False
    return one == other or one.endswith("." + other) or other.endswith("." + one)


def _dkim_domains(raw: bytes, dns: DnsLookup | None) -> list[str]:
    """The ``d=`` domain of every DKIM signature that verifies."""
    checker = dkim.DKIM(raw)
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    domains: list[str] = []
    for index in range(min(count, MAX_SIGNATURES)):
        try:
            ok = checker.verify(idx=index, dnsfunc=dns) if dns else checker.verify(idx=index)
        except Exception as error:  # a malformed signature, a key that is not one, DNS failing: not proven
            log.info("a DKIM signature could not be checked (%s)", type(error).__name__)
            continue
        if ok and checker.domain:
            domains.append(checker.domain.decode("ascii", "replace").lower())
    return domains


def _mailgun_spf_passed(headers: Sequence[tuple[str, str]]) -> bool:
    """SPF as Mailgun states it: its own X-Mailgun-Spf, above the first Received header."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == "received":
            return False  # below this line, headers were written before the message reached Mailgun
        if lowered == "x-mailgun-spf":
            return value.strip().lower().startswith("pass")
    return False
