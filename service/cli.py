"""The `aftercare` command (docs/architecture.md#interface). Machine-readable output is one JSON document."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

# Only argparse and the standard library up here: `aftercare --help` and a usage error must answer at once.
# Each command imports its work (the database, broker, provider and web libraries, the triage lexicon) in
# its own function; tests/test_cli_start.py holds this (docs/architecture.md#interface).


class CommandError(Exception):
    """A mistake the user can fix; printed without a traceback."""


def _print_json(document: Any) -> None:
    print(json.dumps(document))


def _parse_timeouts(values: Sequence[str]) -> dict[str, int]:
    timeouts = {}
    for value in values:
        severity, _, seconds = value.partition("=")
        if not seconds.isdigit():
            raise CommandError(f"--ack-timeout takes SEVERITY=SECONDS, e.g. emergency=300; got {value!r}")
        timeouts[severity.strip()] = int(seconds)
    return timeouts


def cmd_serve(args: argparse.Namespace) -> int:
    from service import serve

    return serve.run(host=args.host, port=args.port)


def cmd_migrate(args: argparse.Namespace) -> int:
    from service.migrate import upgrade
    from service.scheduling.care_plans import check_plans

    # The release step of a deploy: a broken plan stops it here, before the new code takes any traffic.
    check_plans()
    upgrade()
    _print_json({"migrated": True})
    return 0


def cmd_clinic_create(args: argparse.Namespace) -> int:
    from service.clinics import create_clinic
    from service.core.phones import InvalidPhone
    from service.core.timezones import timezone_problem
    from service.db import session_scope
    from service.migrate import upgrade

    problem = timezone_problem(args.timezone)
    if problem:
        raise CommandError(f"--timezone: {problem}")
    upgrade()
    try:
        with session_scope() as session:
            clinic, api_key = create_clinic(
                session,
                name=args.name,
                timezone=args.timezone,
                sms_from=args.sms_from,
                email_from=args.email_from,
                quiet_hours=args.quiet_hours,
                emergency_number=args.emergency_number,
                ack_timeouts=_parse_timeouts(args.ack_timeout),
                now=datetime.now(UTC),
            )
    except InvalidPhone as exc:
        raise CommandError(f"--sms-from: {exc}") from exc
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    _print_json({"id": clinic.id, "api_key": api_key})
    print(
        f"aftercare: clinic {clinic.id} has no staff to page yet; until it has, urgent replies page nobody. "
        f"Add the on-call clinician with: aftercare staff add --clinic {clinic.id} --level 1 ...",
        file=sys.stderr,
    )
    return 0


def cmd_clinic_update(args: argparse.Namespace) -> int:
    from service.clinics import update_clinic
    from service.db import session_scope
    from service.migrate import SharedAddresses, upgrade
    from service.models import Clinic

    try:
        upgrade()
    except SharedAddresses:
        # The one migration that waits for this very command: give the clinics their own numbers first.
        if args.sms_from is None and args.email_from is None:
            raise
    try:
        with session_scope() as session:
            clinic = session.get(Clinic, args.clinic)
            if clinic is None:
                raise CommandError(f"no clinic {args.clinic}; create one with `aftercare clinic create`")
            update_clinic(
                session,
                clinic,
                now=datetime.now(UTC),
                ack_timeouts=_parse_timeouts(args.ack_timeout),
                quiet_hours=args.quiet_hours,
                emergency_number=args.emergency_number,
                inbox_reply_within_minutes=args.reply_within,
                sms_from=args.sms_from,
                email_from=args.email_from,
            )
            document = {
                "id": clinic.id,
                "sms_from": clinic.sms_from,
                "email_from": clinic.email_from,
                "ack_timeouts": clinic.ack_timeouts,
                "quiet_hours": f"{clinic.quiet_start}-{clinic.quiet_end}",
                "emergency_number": clinic.emergency_number,
                "reply_within_minutes": clinic.inbox_reply_within_minutes,
            }
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    _print_json(document)
    return 0


def cmd_unrouted(args: argparse.Namespace) -> int:
    """The operator's list: when, on which channel, to which of our numbers or addresses (the one to give
    a clinic, or to stop pointing at us), from whom (masked) and how long. The text stays in the database."""
    from service.db import session_scope
    from service.migrate import upgrade
    from service.replies import unrouted

    upgrade()
    with session_scope() as session:
        found = unrouted.recent(session, now=datetime.now(UTC), days=args.days)
        for message in found:
            print(
                f"{message.received_at:%Y-%m-%d %H:%M} UTC  {message.channel:<5}  to {message.recipient}  "
                f"from {unrouted.masked(message.sender)}  {len(message.body)} characters"
            )
    if not found:
        print(f"no message to a number or address without a clinic in the last {args.days} days")
    return 0


def cmd_clinic_key(args: argparse.Namespace) -> int:
    from service.clinics import revoke_api_key, rotate_api_key
    from service.db import session_scope
    from service.migrate import upgrade
    from service.models import Clinic

    upgrade()
    with session_scope() as session:
        clinic = session.get(Clinic, args.clinic)
        if clinic is None:
            raise CommandError(f"no clinic {args.clinic}; create one with `aftercare clinic create`")
        if args.clinic_command == "rotate-key":
            document: dict[str, Any] = {
                "id": clinic.id,
                "api_key": rotate_api_key(session, clinic, now=datetime.now(UTC)),
            }
        else:
            revoke_api_key(session, clinic, now=datetime.now(UTC))
            document = {"id": clinic.id, "revoked": True}
    _print_json(document)
    return 0


def cmd_staff_add(args: argparse.Namespace) -> int:
    from service.clinics import add_staff
    from service.core.phones import InvalidPhone
    from service.db import session_scope
    from service.migrate import upgrade
    from service.models import Clinic

    password = args.password
    if args.password_stdin:
        # Read from stdin so the password never appears in the process list or the shell history.
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("--password-stdin read an empty line; pipe the password in, e.g. from a file")
    upgrade()
    try:
        with session_scope() as session:
            clinic = session.get(Clinic, args.clinic)
            if clinic is None:
                raise CommandError(f"no clinic {args.clinic}; create one with `aftercare clinic create`")
            member = add_staff(
                session,
                clinic=clinic,
                name=args.name,
                phone=args.phone,
                email=args.email,
                level=args.level,
                role=args.role,
                password=password,
                now=datetime.now(UTC),
            )
    except InvalidPhone as exc:
        raise CommandError(f"--phone: {exc}") from exc
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    _print_json({"id": member.id})
    return 0


def cmd_triage(args: argparse.Namespace) -> int:
    """JSON lines in, JSON lines out; a bad line is answered with an error, not a crash."""
    from service.triage import triage
    from service.triage.loader import load_lexicon

    lexicon = load_lexicon()
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text, day = item["text"], item.get("day")
            risk_flags = item.get("risk_flags") or []
            if (
                not isinstance(text, str)
                or not (day is None or isinstance(day, int))
                or not isinstance(risk_flags, list)
                or not all(isinstance(flag, str) for flag in risk_flags)
            ):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            expected = '{"text": str, "day": int or null, "risk_flags": [str] (optional)}'
            print(f"aftercare triage: line {number} is not {expected}", file=sys.stderr)
            print(json.dumps({"error": f"line {number}: expected {expected}"}))
            continue
        try:
            result = triage(
                text, day=day, lexicon=lexicon, treatment=item.get("treatment"), risk_flags=risk_flags
            )
        except ValueError as exc:  # an unknown risk flag: the message names the allowed ones
            print(f"aftercare triage: line {number}: {exc}", file=sys.stderr)
            print(json.dumps({"error": f"line {number}: {exc}"}))
            continue
        print(json.dumps(result.to_json(), ensure_ascii=False), flush=True)
    return 0


def cmd_simulate_sms(args: argparse.Namespace) -> int:
    """Post an inbound SMS to a running service exactly as Twilio would, signed with TWILIO_AUTH_TOKEN."""
    import secrets
    import urllib.error
    import urllib.parse
    import urllib.request

    from service.channels.twilio.webhooks import signature
    from service.settings import get_settings

    settings = get_settings()
    if not settings.TWILIO_AUTH_TOKEN:
        raise CommandError("set TWILIO_AUTH_TOKEN (the same value the service runs with) to sign the post")
    path = "/webhooks/twilio/sms"
    form = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "From": args.sender,
        "To": args.to,
        "Body": args.body,
        "NumMedia": "0",
    }
    headers = {
        "X-Twilio-Signature": signature(
            auth_token=settings.TWILIO_AUTH_TOKEN, url=settings.PUBLIC_BASE_URL.rstrip("/") + path, form=form
        ),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    request = urllib.request.Request(
        args.url.rstrip("/") + path,
        data=urllib.parse.urlencode(form).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a URL the user gave
            print(response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        raise CommandError(
            f"the service answered {exc.code}: {exc.read().decode('utf-8', 'replace')}"
        ) from exc
    except urllib.error.URLError as exc:
        raise CommandError(f"cannot reach {args.url}: {exc.reason}; is `aftercare serve` running?") from exc
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aftercare", description="Aftercare messages, triage and paging for skin clinics."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="run web, worker and beat together")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.set_defaults(handler=cmd_serve)

    migrate_parser = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate_parser.set_defaults(handler=cmd_migrate)

    clinic = commands.add_parser("clinic", help="manage clinics").add_subparsers(
        dest="clinic_command", required=True
    )
    create = clinic.add_parser("create", help="create a clinic and print its API key")
    create.add_argument("--name", required=True)
    create.add_argument("--timezone", required=True, help="IANA name, e.g. America/New_York")
    create.add_argument("--sms-from", required=True, help="the clinic's Twilio number, E.164")
    create.add_argument("--email-from", required=True, help="sender address for patient email")
    create.add_argument(
        "--quiet-hours", default="21:00-08:00", help="no SMS in this local window (default 21:00-08:00)"
    )
    create.add_argument(
        "--emergency-number", default=None, help="default: from the clinic's country (911, 999, 112)"
    )
    create.add_argument(
        "--ack-timeout",
        action="append",
        default=[],
        metavar="SEVERITY=SECONDS",
        help="page the next level after this long unacknowledged (default emergency=300, urgent=900)",
    )
    create.set_defaults(handler=cmd_clinic_create)

    update = clinic.add_parser("update", help="change a clinic's settings (running escalations keep theirs)")
    update.add_argument("--clinic", type=int, required=True)
    update.add_argument(
        "--ack-timeout", action="append", default=[], metavar="SEVERITY=SECONDS",
        help="page the next level after this long unacknowledged",
    )  # fmt: skip
    update.add_argument("--quiet-hours", default=None, help="no SMS in this local window, e.g. 21:00-08:00")
    update.add_argument("--emergency-number", default=None)
    update.add_argument(
        "--reply-within", type=int, default=None, metavar="MINUTES",
        help="flag inbox messages not answered within this long (default 240)",
    )  # fmt: skip
    update.add_argument("--sms-from", default=None, help="the clinic's own SMS number (no other clinic's)")
    update.add_argument("--email-from", default=None, help="the clinic's own sender address")
    update.set_defaults(handler=cmd_clinic_update)

    rotate = clinic.add_parser("rotate-key", help="a new API key; the old one stops working at once")
    rotate.add_argument("--clinic", type=int, required=True)
    rotate.set_defaults(handler=cmd_clinic_key)
    revoke = clinic.add_parser("revoke-key", help="no API key works until rotate-key makes a new one")
    revoke.add_argument("--clinic", type=int, required=True)
    revoke.set_defaults(handler=cmd_clinic_key)

    staff = commands.add_parser("staff", help="manage staff").add_subparsers(
        dest="staff_command", required=True
    )
    add = staff.add_parser("add", help="add a staff member to a clinic")
    add.add_argument("--clinic", type=int, required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--phone", required=True)
    add.add_argument("--email", required=True)
    add.add_argument("--level", type=int, required=True, help="escalation level; 1 is paged first")
    add.add_argument("--role", default="clinician")
    secret = add.add_mutually_exclusive_group()
    secret.add_argument(
        "--password", default=None, help="for the dashboard login (visible in the process list)"
    )
    secret.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the dashboard password from the first line of stdin",
    )
    add.set_defaults(handler=cmd_staff_add)

    unrouted = commands.add_parser(
        "unrouted", help="messages sent to a number or address no clinic has (the operator's to fix)"
    )
    unrouted.add_argument("--days", type=int, default=7, help="how far back (default 7)")
    unrouted.set_defaults(handler=cmd_unrouted)

    simulate = commands.add_parser(
        "simulate-sms", help="post an inbound SMS to a running service as Twilio would (signed)"
    )
    simulate.add_argument("--from", dest="sender", required=True, help="the sender's number, E.164")
    simulate.add_argument("--to", required=True, help="the clinic's number, E.164")
    simulate.add_argument("--body", required=True)
    simulate.add_argument("--url", default="http://127.0.0.1:8000", help="where the service listens")
    simulate.set_defaults(handler=cmd_simulate_sms)

    triage_parser = commands.add_parser(
        "triage",
        help="triage JSON lines from stdin",
        description='Reads {"text": str, "day": int or null, "treatment": str (optional), "risk_flags": '
        "[str] (optional: eczema, psoriasis, rosacea, cold_sore_history, immunosuppression, diabetes, "
        "blood_thinners, autoimmune, keloids, pih_risk, metal_allergy, isotretinoin, fitzpatrick_iv_vi)} per "
        "line; writes "
        '{"severity", "keyword", "findings"} per line, or {"error"} for a line it cannot read.',
    )
    triage_parser.set_defaults(handler=cmd_triage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # After parsing: a usage error or --help has exited by now, and the command loads plans anyway.
    from service.core.plans import PlanError

    try:
        return int(args.handler(args))
    except (CommandError, PlanError) as exc:
        print(f"aftercare: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
