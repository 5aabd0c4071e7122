"""Every setting comes from the environment, with a documented default (docs/architecture.md#interface).

With nothing set, the service runs on a SQLite file and kombu's SQLAlchemy transport on a second SQLite
file in ``DATA_DIR``, and messages go to the console channel: a fresh laptop needs no server at all.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property, lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Keys that appear in documentation, samples and old defaults: anyone could sign links and sessions with
# them. Refused everywhere, as is anything shorter than MIN_SECRET_LENGTH.
WELL_KNOWN_SECRETS = frozenset(
    {
        "dev-only-secret-change-me", "changeme", "change-me", "change_me", "secret", "secret-key",
        "secret_key", "your-secret-key", "supersecret", "development", "test", "password", "aftercare",
    }
)  # fmt: skip
MIN_SECRET_LENGTH = 32
SECRET_KEY_FILE = "secret_key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Where the embedded defaults keep their files (the SQLite database and the embedded broker).
    DATA_DIR: Path = Field(default=Path(".data"))
    # Unset: a SQLite file in DATA_DIR. Production: postgresql://user:pass@host/db
    DATABASE_URL: str = ""
    # Connections each process keeps to PostgreSQL, and how many more it may open at a peak.
    DATABASE_POOL_SIZE: int = 20
    DATABASE_MAX_OVERFLOW: int = 10
    # PostgreSQL ends a session idle inside a transaction this long (its process is gone or stuck), so the
    # locks it held are released. Our transactions never wait on anything outside the database.
    DATABASE_IDLE_TRANSACTION_SECONDS: float = 60.0
    # Unset: kombu's SQLAlchemy transport on a SQLite file beside the database. Production: redis://host:6379/0
    BROKER_URL: str = ""
    # The URL Twilio and patients reach us at; signatures are checked against it, so behind a proxy it
    # must be the public https URL, not the internal one.
    PUBLIC_BASE_URL: str = "http://localhost:8000"
    # The care plans (one <treatment>.toml each), checked when the web, worker and `aftercare migrate`
    # start and read once per process: an edit needs a restart.
    PLANS_DIR: Path = Field(default=PROJECT_ROOT / "templates" / "plans")
    # Signs dashboard sessions, CSRF tokens and unsubscribe links. There is no shared default: the
    # embedded set-up (no DATABASE_URL, no BROKER_URL) generates one on first run and keeps it in
    # DATA_DIR; any other set-up refuses to start without a strong one.
    SECRET_KEY: str = ""

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

    # Dispatch: how often beat claims due rows, and how many per run. A pass that finds nothing costs one
    # indexed query, so once a second is cheap and keeps the 08:00 burst and every recovery prompt.
    DISPATCH_INTERVAL_SECONDS: float = 1.0
    DISPATCH_BATCH_SIZE: int = 500
    # Backpressure: claim no more while this many rows wait in the broker, so a burst waits in the database
    # (where a cancel or STOP still reaches it) and nothing sits queued long enough to look lost.
    DISPATCH_MAX_QUEUED: int = 1000
    # At a burst, due rows go to the workers this many to a task (fewer broker round trips per message).
    SENDS_PER_TASK: int = 4
    # A row claimed but not picked up by a worker after this long is handed back (its task was lost, e.g.
    # Redis restarted empty). Several times what a full queue takes to drain at the shipped throughput.
    QUEUED_STALE_SECONDS: float = 30.0
    # A row left in *sending* after this long is marked unknown and settled by asking the provider (never
    # resent blind). Must exceed the provider timeouts, or a slow send would be taken for a dead one.
    SENDING_STALE_SECONDS: float = 20.0
    # How long to wait for a status callback before asking the provider about an unknown outcome.
    UNKNOWN_GRACE_SECONDS: float = 15.0
    # A send whose request may have reached the provider without an answer (a read timeout, a connection
    # dropped mid-response, a worker killed inside the call) is looked up until this long after the
    # request left before "not found" counts as "not sent": a slow API may still act on a request after
    # the client gave up (one that held requests 30 s and then accepted them sent 16 of 100 SMS twice when
    # we resent after the first empty look-up). Four times that hold; a longer window only delays the resend
    # of a message that truly never arrived (docs/architecture.md#delivery-guarantee).
    SEND_SETTLE_WINDOW_SECONDS: float = 120.0
    # Transient failures: retry after BASE * 2**(attempt-1) seconds, at most MAX seconds apart, at most
    # MAX_ATTEMPTS sends. A short cap brings held messages out within half a minute of an outage ending;
    # 32 attempts at that cap ride out about a quarter of an hour of provider outage before failing visibly.
    RETRY_BACKOFF_BASE_SECONDS: float = 5.0
    RETRY_BACKOFF_MAX_SECONDS: float = 30.0
    MAX_SEND_ATTEMPTS: int = 32
    # An exception in our own send code (not a provider's answer) is retried this many times in all, then
    # the row fails for staff to see: a poison row must not come back every sweep for ever.
    MAX_SEND_CRASHES: int = 3

    # Workers (docs/benchmarks.md#the-shipped-layout): sending waits on the provider's network answer, so
    # each worker process runs a pool of threads; one process per core (0 = as many as there are cores)
    # uses the cores for the Python work between those waits.
    WORKER_POOL: str = "threads"
    WORKER_CONCURRENCY: int = 16
    WORKER_PROCESSES: int = 0
    # The inbound worker (docs/architecture.md#the-inbox): one process of its own on the inbound queue, so
    # replies never wait behind scheduled sends. Triage is CPU work: a few threads overlap the database
    # round trips; more would only queue for the interpreter.
    INBOUND_CONCURRENCY: int = 4
    # An inbound message still unprocessed this long after its last try (or its arrival) lost its task: the
    # dispatcher's sweep hands it to the inbound worker again.
    INBOUND_STALE_SECONDS: float = 60.0
    # Web processes for `aftercare serve` (0 = one per core).
    WEB_CONCURRENCY: int = 0

    # Paging: a claimed escalation step whose task never ran is handed back after this long.
    STEP_STALE_SECONDS: float = 60.0
    # The silent-failure alarm (a watchdog in each web process): how often it looks, and when it speaks.
    WATCHDOG_ENABLED: bool = True
    WATCHDOG_INTERVAL_SECONDS: float = 30.0
    ALERT_EMAIL: str = ""  # told of every alarm, besides each clinic's level-1 staff
    ALARM_DISPATCHER_SILENT_SECONDS: float = 60.0
    ALARM_OVERDUE_SECONDS: float = 120.0
    ALARM_FAILURE_WINDOW_SECONDS: float = 600.0
    ALARM_FAILURES: int = 10
    ALARM_STEP_OVERDUE_SECONDS: float = 60.0
    # Patients' photos: the largest we keep, and how long.
    MEDIA_MAX_BYTES: int = 5 * 1024 * 1024
    MEDIA_RETENTION_DAYS: int = 90
    # What messages said (ours and patients'), kept this long; the delivery record stays for good.
    RETENTION_DAYS: int = 365
    # The dashboard: how long a login lasts, and how many failed logins an address gets per window.
    SESSION_MAX_AGE_SECONDS: int = 12 * 3600
    LOGIN_MAX_FAILURES: int = 5
    LOGIN_WINDOW_SECONDS: int = 15 * 60

    @model_validator(mode="after")
    def _stale_after_timeouts(self) -> Settings:
        slowest = max(self.TWILIO_TIMEOUT_SECONDS, self.SMTP_TIMEOUT_SECONDS)
        if slowest >= self.SENDING_STALE_SECONDS:
            raise ValueError(
                f"SENDING_STALE_SECONDS ({self.SENDING_STALE_SECONDS:g}) must be longer than the provider "
                f"timeouts (TWILIO_TIMEOUT_SECONDS, SMTP_TIMEOUT_SECONDS: {slowest:g}), or a slow send "
                "is taken for a dead one"
            )
        if slowest > self.SEND_SETTLE_WINDOW_SECONDS:
            raise ValueError(
                f"SEND_SETTLE_WINDOW_SECONDS ({self.SEND_SETTLE_WINDOW_SECONDS:g}) must be at least the "
                f"provider timeouts ({slowest:g}): a request the client gave up on may still be acted on"
            )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_secret(self) -> Settings:
        if self.SECRET_KEY:
            check_secret(self.SECRET_KEY)
        elif not self.embedded:
            raise ValueError(
                "SECRET_KEY must be set when DATABASE_URL or BROKER_URL is: it signs dashboard sessions and "
                "unsubscribe links. Generate one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return self

    @property
    def worker_processes(self) -> int:
        return self.WORKER_PROCESSES or os.cpu_count() or 1

    @property
    def web_processes(self) -> int:
        return self.WEB_CONCURRENCY or os.cpu_count() or 1

    @property
    def embedded(self) -> bool:
        """The laptop set-up: a SQLite file and the embedded broker, nothing to configure."""
        return not self.DATABASE_URL and not self.BROKER_URL

    @cached_property
    def signing_key(self) -> str:
        """The key that signs sessions and links: SECRET_KEY, or (embedded set-up only) a random key made
        on first run and kept, readable by the owner alone, in DATA_DIR."""
        if self.SECRET_KEY:
            return self.SECRET_KEY
        path = self.DATA_DIR / SECRET_KEY_FILE
        if not path.exists():
            self.ensure_data_dir()
            try:
                with open(path, "x", encoding="utf-8", opener=_owner_only) as handle:
                    handle.write(secrets.token_urlsafe(48))
            except FileExistsError:
                pass  # another process of the same set-up made it first
        key = path.read_text(encoding="utf-8").strip()
        check_secret(key)
        return key

    @property
    def cookie_secure(self) -> bool:
        """Session cookies only over https, unless the service itself is reached over plain http."""
        return self.PUBLIC_BASE_URL.startswith("https://")

    @property
    def database_url(self) -> str:
        if not self.DATABASE_URL:
            return f"sqlite:///{(self.DATA_DIR / 'aftercare.db').resolve()}"
        return psycopg_url(self.DATABASE_URL)

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
        # Owner only: the database, the broker's queue and the generated key live here.
        self.DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)


def psycopg_url(url: str) -> str:
    """SQLAlchemy's plain postgresql:// means psycopg2; we ship psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def check_secret(key: str) -> None:
    if len(key) < MIN_SECRET_LENGTH or key.strip().lower() in WELL_KNOWN_SECRETS:
        raise ValueError(
            f"SECRET_KEY is too short or well known; use at least {MIN_SECRET_LENGTH} random characters, "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
