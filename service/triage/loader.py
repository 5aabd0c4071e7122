"""The triage data from ``templates/triage/`` — the only part of triage that reads files.

The data is what a clinic's clinician reviews and may edit (``vocabulary/``) and what engineers tune
(``engine/``), so a mistake in it is reported at load time with the file and the entry named (by
``service.triage.schema``), instead of showing up later as a symptom that silently stops paging anyone.
Loading compiles everything once (a trie, a typo table, the red-flag screen, the classifier's weights);
``load_lexicon`` caches the result per directory.
"""

from __future__ import annotations

import json
import threading
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
    "red_flags": "vocabulary/red_flags.toml",
    "modifiers": "engine/modifiers.toml",
    "normalise": "engine/normalise.toml",
    "languages": "engine/languages.toml",
    "classifier": "engine/classifier.toml",
    "classifier_weights": "engine/classifier.json",
}
# LexiconError names a file by its stem, or by its name when it is not TOML.
_BY_ERROR_NAME = {**{name: name for name in FILES}, "classifier.json": "classifier_weights"}


def load_lexicon(directory: Path | None = None) -> Lexicon:
    """Read, validate and compile the triage data. Raises ValueError naming the file and the entry."""
    # Under a lock: the first replies of a burst arrive together, and without it each of their threads
    # compiled the lexicon (half a second of CPU) at the same time.
    with _LOADING:
        return _load((directory or DEFAULT_TRIAGE_DIR).resolve())


_LOADING = threading.Lock()


@lru_cache(maxsize=8)
def _load(directory: Path) -> Lexicon:
    data = {name: _read(directory / relative) for name, relative in FILES.items()}
    try:
        return compile_lexicon(**data)
    except LexiconError as exc:
        raise ValueError(
            f"{directory / FILES[_BY_ERROR_NAME[exc.file]]}: {exc.entry}: {exc.message}"
        ) from exc


def clear_lexicon_cache() -> None:
    """Forget compiled lexicons, so edited files are read again (tests; a reload after a clinician's edit)."""
    _load.cache_clear()


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{path}: missing (the triage lexicon needs {', '.join(FILES.values())})")
    if path.suffix == ".json":
        try:
            parsed: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return parsed
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
