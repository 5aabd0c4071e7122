"""The triage data from ``templates/triage/`` — the only part of triage that reads files.

The data is what a clinic's clinician reviews and may edit (``vocabulary/``) and what engineers tune
(``engine/``), so a mistake in it is reported at load time with the file and the entry named (by
``service.triage.schema``), instead of showing up later as a symptom that silently stops paging anyone.
Loading compiles everything once (a trie, a typo table); ``load_lexicon`` caches the result per directory.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from service.settings import PROJECT_ROOT
from service.triage.lexicon import Lexicon, compile_lexicon
from service.triage.schema import LexiconError

DEFAULT_TRIAGE_DIR = PROJECT_ROOT / "templates" / "triage"
FILES = {
    "concepts": "vocabulary/concepts.toml",
    "keywords": "vocabulary/keywords.toml",
    "modifiers": "engine/modifiers.toml",
    "normalise": "engine/normalise.toml",
}


def load_lexicon(directory: Path | None = None) -> Lexicon:
    """Read, validate and compile the triage data. Raises ValueError naming the file and the entry."""
    return _load((directory or DEFAULT_TRIAGE_DIR).resolve())


@lru_cache(maxsize=8)
def _load(directory: Path) -> Lexicon:
    data = {name: _read(directory / relative) for name, relative in FILES.items()}
    try:
        return compile_lexicon(**data)
    except LexiconError as exc:
        raise ValueError(f"{directory / FILES[exc.file]}: {exc.entry}: {exc.message}") from exc


def clear_lexicon_cache() -> None:
    """Forget compiled lexicons, so edited files are read again (tests; a reload after a clinician's edit)."""
    _load.cache_clear()


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{path}: missing (the triage lexicon needs {', '.join(FILES.values())})")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
