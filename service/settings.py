"""Every setting comes from the environment, with a documented default (docs/architecture.md#interface).

With nothing set, the service runs on a SQLite file and kombu's SQLAlchemy transport on a second SQLite
file in ``DATA_DIR``, and messages go to the console channel: a fresh laptop needs no server at all.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Where the embedded defaults keep their files (the SQLite database and the embedded broker).
    DATA_DIR: Path = Field(default=Path(".data"))
    # Unset: a SQLite file in DATA_DIR. Production: postgresql://user:pass@host/db
    DATABASE_URL: str = ""
    # Unset: kombu's SQLAlchemy transport on a SQLite file beside the database. Production: redis://host:6379/0
    BROKER_URL: str = ""
    # The URL Twilio and patients reach us at; signatures are checked against it, so behind a proxy it
    # must be the public https URL, not the internal one.
    PUBLIC_BASE_URL: str = "http://localhost:8000"
    # Signs unsubscribe links. Refused at start-up in production when left at the default.
    SECRET_KEY: str = "dev-only-secret-change-me"

    TWILIO_ACCOUNT_SID: str = ""
    TWILIO_AUTH_TOKEN: str = ""
    # Points the real Twilio client at another server (a sandbox or the test suite's fake).
    TWILIO_API_BASE_URL: str = ""
    # twilio-python's default HTTP client waits forever; a hung request would hold a worker and a row.
    TWILIO_TIMEOUT_SECONDS: float = 10.0

    SMTP_HOST: str = ""
    SMTP_PORT: int = 587
    SMTP_USERNAME: str = ""
    SMTP_PASSWORD: str = ""
    SMTP_STARTTLS: bool = True
    SMTP_TIMEOUT_SECONDS: float = 15.0
    # The sender when a clinic has none of its own.
    EMAIL_FROM: str = "aftercare@localhost"
    INBOUND_EMAIL_SECRET: str = ""

    # Dispatch: how often beat claims due rows, and how many per run.
    DISPATCH_INTERVAL_SECONDS: float = 5.0
    DISPATCH_BATCH_SIZE: int = 500
    # A row claimed but not picked up by a worker after this long is handed back (the task was lost).
    QUEUED_STALE_SECONDS: float = 300.0
    # A row left in *sending* after this long is marked unknown and settled with the provider.
    SENDING_STALE_SECONDS: float = 120.0
    # How long to wait for a status callback before asking the provider about an unknown outcome.
    UNKNOWN_GRACE_SECONDS: float = 300.0
    # Transient failures: retry after BASE * 2**(attempt-1) seconds (with jitter), at most MAX_ATTEMPTS sends.
    RETRY_BACKOFF_BASE_SECONDS: float = 60.0
    RETRY_BACKOFF_MAX_SECONDS: float = 3600.0
    MAX_SEND_ATTEMPTS: int = 6

    # The worker for `aftercare serve`; production runs `celery -A tasks.app worker` itself.
    WORKER_POOL: str = "threads"
    WORKER_CONCURRENCY: int = 4

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        # A production database with the development secret would let anyone forge unsubscribe links.
        if (
            self.DATABASE_URL.startswith("postgres")
            and self.SECRET_KEY == "dev-only-secret-change-me"
            and os.environ.get("AFTERCARE_ALLOW_DEV_SECRET") != "1"
        ):
            raise ValueError("SECRET_KEY must be set when DATABASE_URL points at PostgreSQL")
        return self

    @property
    def database_url(self) -> str:
        if not self.DATABASE_URL:
            return f"sqlite:///{(self.DATA_DIR / 'aftercare.db').resolve()}"
        url = self.DATABASE_URL
        # SQLAlchemy's plain postgresql:// means psycopg2; we ship psycopg 3.
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def broker_url(self) -> str:
        if not self.BROKER_URL:
            return f"sqla+sqlite:///{(self.DATA_DIR / 'broker.db').resolve()}"
        return self.BROKER_URL

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("sqla+")

    @property
    def sms_provider(self) -> str:
        return "twilio" if self.TWILIO_ACCOUNT_SID else "console"

    @property
    def email_provider(self) -> str:
        return "smtp" if self.SMTP_HOST else "console"

    def ensure_data_dir(self) -> None:
        self.DATA_DIR.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
