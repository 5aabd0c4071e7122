# TEMPORARY shim until h-trust merges
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

DnsLookup = Callable[..., bytes | None]
@dataclass(frozen=True)
class Trust:
    verified: bool
    method: str | None
    reason: str
def verify_sender(*, raw: bytes | None, headers: Sequence[tuple[str, str]], envelope_sender: str, from_address: str, dns: DnsLookup | None = None) -> Trust:
    spf = next((v for n, v in headers if n.lower() == "x-mailgun-spf"), "")
    ok = spf.strip().lower().startswith("pass")
    return Trust(ok, "spf" if ok else None, "shim")
