"""Bring the database schema up to date with Alembic, from code (no alembic.ini needed)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from service.settings import PROJECT_ROOT, get_settings


class SharedAddresses(RuntimeError):
    """Clinics already in the database share an SMS number or a sender address: the migration that makes
    them unique names them, and `aftercare clinic update` (which runs without it) fixes them."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    return config


def upgrade() -> None:
    if get_settings().database_url.startswith("sqlite"):
        get_settings().ensure_data_dir()
    command.upgrade(alembic_config(), "head")
