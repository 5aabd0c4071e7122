"""SMS through Twilio, with the real ``twilio.rest.Client``.

Two things the stock client does not do, and we need:

- a timeout: ``TwilioHttpClient`` waits forever by default (docs/architecture.md#providers), so one hung
  request would hold a worker and leave its outbox row in *sending*;
- a base URL: the client hard-codes ``https://api.twilio.com``; tests and sandboxes point it at another
  server through ``TWILIO_API_BASE_URL`` (docs/architecture.md#providers).

The error mapping below is the heart of "an SMS is never sent twice"
(docs/architecture.md#delivery-guarantee): anything that may have reached Twilio is reported as
``outcome_unknown`` so the caller settles it by status callback or ``lookup``, never by sending again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base import values
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import MaxRetryError, NewConnectionError

from service.channels.base import DeliveryError, FetchedMedia, MediaTooLarge, OutgoingMessage, ProviderReceipt
from service.channels.twilio.codes import TOO_MANY_REQUESTS, problem_for

logger = logging.getLogger(__name__)

# How far before ``since`` a message may be dated and still count as ours: Twilio's clock and ours differ
# slightly. Small, because an identical text sent earlier (a repeated page) must not be mistaken for it.
LOOKUP_CLOCK_SKEW = timedelta(seconds=60)
# How many recent messages to one number we scan in a look-up; aftercare sends a handful a week.
LOOKUP_SCAN_LIMIT = 200


class TimeoutTwilioHttpClient(TwilioHttpClient):
    """``TwilioHttpClient`` that always has a timeout and can send every request to another base URL."""

    def __init__(self, *, timeout: float, api_base_url: str = "", **kwargs: Any) -> None:
        super().__init__(timeout=timeout, **kwargs)
        self.api_base_url = api_base_url.rstrip("/")
        if self.api_base_url:
            base = urlsplit(self.api_base_url)
            if not base.scheme or not base.netloc:
                raise ValueError(f"TWILIO_API_BASE_URL must look like http://host:port, got {api_base_url!r}")
            self._base = base
        if self.session is not None:
            # requests reads proxies and CA bundles from the environment on every request, a scan of
            # os.environ each time; they do not change while a worker runs, so they are read once here.
            configured: dict[str, str] = dict(kwargs.get("proxy") or {})
            found = self.session.merge_environment_settings(
                self.api_base_url or "https://api.twilio.com", configured, None, None, None
            )
            self.proxy = found["proxies"]
            self.session.verify = found["verify"]
            self.session.trust_env = False

    def rewrite_url(self, url: str) -> str:
        """Replace scheme and host (and port) of a Twilio URL with the configured base URL.

        Every Twilio domain (api., messaging., ...) lands on the same server: a fake serves them all.
        """
        if not self.api_base_url:
            return url
        parts = urlsplit(url)
        path = self._base.path.rstrip("/") + parts.path
        return urlunsplit((self._base.scheme, self._base.netloc, path, parts.query, parts.fragment))

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        return super().request(
            method,
            self.rewrite_url(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


def _request_never_left(exc: requests.RequestException) -> bool:
    """Did this failure happen before any byte of the request could have reached Twilio?

    Only a failure to open the connection qualifies (refused, DNS, connect timeout, proxy unreachable).
    A read timeout, a reset or a disconnect after connecting may come after Twilio received the request
    and created the message, so it must not be retried blind. twilio-python does not wrap these: the
    ``requests`` exceptions reach us as they are.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ProxyError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        cause = exc.args[0]
        # Connection refused and name resolution end as MaxRetryError(reason=NewConnectionError); a
        # connection dropped mid-request ends as a bare ProtocolError and is *not* safe to retry.
        return isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError)
    return False


def _map_twilio_error(exc: TwilioRestException | TwilioServiceException, *, action: str) -> DeliveryError:
    status = int(exc.status) if exc.status is not None else 0
    code = exc.code
    code_text = str(code) if code is not None else None
    # The text is shown to staff and logged, so it is ours, never Twilio's (which may quote the number).
    where = f"(Twilio code {code_text}, HTTP {status})"
    problem = problem_for(code)
    if problem is not None:
        return DeliveryError(
            f"Twilio refused the SMS: {problem.advice} {where}", code=code_text, problem=problem
        )
    if status == 429 or code == TOO_MANY_REQUESTS:
        # Rate limited: Twilio refused the request before creating anything.
        return DeliveryError(f"Twilio {action} rate-limited, nothing was sent {where}", code=code_text)
    if status >= 500:
        # Twilio may have created the message before failing, but it answered: it is done with the
        # request, so the look-up after the grace period settles it (found: sent; not found: send again).
        return DeliveryError(
            f"Twilio {action} failed on Twilio's side; it may have gone {where}",
            outcome_unknown=True,
            answered=True,
            code=code_text,
        )
    if status == 0:
        # No HTTP status at all: we cannot tell what Twilio did, nor whether it is still doing it.
        return DeliveryError(
            f"Twilio {action} failed without a status; it may have gone {where}",
            outcome_unknown=True,
            code=code_text,
        )
    # Any other 4xx: the request was refused. Retrying is capped by the caller's MAX_SEND_ATTEMPTS, after
    # which the row fails with this code for staff to see.
    return DeliveryError(
        f"Twilio refused the {action} {where}; see https://www.twilio.com/docs/errors/{code_text}",
        code=code_text,
    )


def _twilio_time(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class TwilioSMS:
    """The SMS channel. One instance is shared by a worker's threads (``requests.Session`` allows that)."""

    name = "sms"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_base_url: str = "",
        timeout: float = 10.0,
        http_client: TwilioHttpClient | None = None,
    ) -> None:
        # twilio-python logs each request's method, URL and headers and each answer's at INFO: about ten
        # lines per SMS, most of a worker's logging at a burst, and nothing our own line does not say.
        logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
        self.http_client = http_client or TimeoutTwilioHttpClient(timeout=timeout, api_base_url=api_base_url)
        # Our own environment for the client, so TWILIO_EDGE/TWILIO_REGION in the process environment cannot
        # silently send our traffic elsewhere: everything comes from settings. (It must be non-empty: the
        # client treats an empty mapping as "use os.environ".)
        self.client = Client(
            account_sid,
            auth_token,
            http_client=self.http_client,
            environment={"AFTERCARE_SETTINGS_ONLY": "1"},
        )
        # The client imports its API modules on first use; done here, once, not by sixteen threads at
        # once under the import lock when the first burst arrives.
        self.messages = self.client.api.v2010.account.messages

    @classmethod
    def from_settings(cls, settings: Any) -> TwilioSMS:
        return cls(
            account_sid=settings.TWILIO_ACCOUNT_SID,
            auth_token=settings.TWILIO_AUTH_TOKEN,
            api_base_url=settings.TWILIO_API_BASE_URL,
            timeout=settings.TWILIO_TIMEOUT_SECONDS,
        )

    def send(self, message: OutgoingMessage) -> ProviderReceipt:
        try:
            created = self.messages.create(
                to=message.to,
                from_=message.sender,
                body=message.body,
                status_callback=message.status_callback or values.unset,
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _map_twilio_error(exc, action="send") from exc
        except requests.RequestException as exc:
            if _request_never_left(exc):
                raise DeliveryError(f"Twilio unreachable: {type(exc).__name__}") from exc
            # ReadTimeout, reset, disconnect: the request may have been received and the SMS created.
            raise DeliveryError(
                f"no answer from Twilio after sending: {type(exc).__name__}", outcome_unknown=True
            ) from exc
        except Exception as exc:
            # A 2xx we could not parse, or anything else unexpected once the request may have left: assume
            # it might have been created. A wrong "unknown" costs a look-up; a wrong "retry" a duplicate SMS.
            raise DeliveryError(
                f"unexpected failure sending to Twilio: {type(exc).__name__}", outcome_unknown=True
            ) from exc
        if not created.sid:
            raise DeliveryError("Twilio answered without a message sid", outcome_unknown=True)
        logger.info("twilio accepted outbox %s as %s (%s)", message.outbox_id, created.sid, created.status)
        return ProviderReceipt(provider_id=created.sid, status=str(created.status or "queued"))

    def lookup(self, message: OutgoingMessage, *, since: datetime) -> ProviderReceipt | None:
        """Find the SMS we may have sent for ``message`` at or after ``since``.

        Filters on To and From at Twilio and on creation time and body here. We deliberately do not use
        Twilio's ``DateSent>`` filter: a message still waiting in Twilio's queue has no ``date_sent`` yet,
        and missing it here would make the caller send it a second time.
        """
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        earliest = since - LOOKUP_CLOCK_SKEW
        try:
            candidates = self.messages.list(
                to=message.to, from_=message.sender, limit=LOOKUP_SCAN_LIMIT, page_size=50
            )
        except Exception as exc:
            # Down, rate-limited, timed out or an answer we cannot read: we cannot tell now, so the row
            # stays unknown and is asked about again later; it is never resent on a guess.
            raise DeliveryError(
                f"cannot ask Twilio about outbox {message.outbox_id}: {type(exc).__name__}",
                outcome_unknown=True,
            ) from exc
        for found in candidates:
            created_at = _twilio_time(found.date_created) or _twilio_time(found.date_sent)
            if created_at is not None and created_at < earliest:
                continue
            if found.body == message.body and found.sid:
                return ProviderReceipt(provider_id=found.sid, status=str(found.status or "queued"))
        return None

    # ---- MMS media (the account's photos; a media URL needs the account's credentials) -------------

    def _media_url(self, url: str) -> str:
        if not url.startswith("https://api.twilio.com/"):
            # Only our account's media at Twilio: a crafted MediaUrl must not make us fetch another host.
            raise DeliveryError("not a Twilio media URL", permanent=True)
        return self.http_client.rewrite_url(url)

    def fetch_media(self, url: str, *, max_bytes: int) -> FetchedMedia:
        try:
            response = self.http_client.session.get(
                self._media_url(url),
                auth=(self.client.username, self.client.password),
                timeout=self.http_client.timeout,
                stream=True,
                allow_redirects=True,  # Twilio answers with a redirect to its media store
            )
            with response:
                if response.status_code == 404:
                    raise DeliveryError("Twilio no longer has this photo", permanent=True)
                if response.status_code >= 400:
                    raise DeliveryError(f"Twilio refused the photo: HTTP {response.status_code}")
                chunks, size = [], 0
                for chunk in response.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise MediaTooLarge(f"larger than {max_bytes} bytes")
                    chunks.append(chunk)
                content_type = response.headers.get("Content-Type", "application/octet-stream").split(";")[0]
        except requests.RequestException as exc:
            raise DeliveryError(f"cannot fetch the photo from Twilio: {type(exc).__name__}") from exc
        return FetchedMedia(b"".join(chunks), content_type.strip().lower())

    def delete_media(self, url: str) -> None:
        try:
            response = self.http_client.session.delete(
                self._media_url(url),
                auth=(self.client.username, self.client.password),
                timeout=self.http_client.timeout,
            )
        except requests.RequestException as exc:
            raise DeliveryError(f"cannot delete the photo at Twilio: {type(exc).__name__}") from exc
        if response.status_code not in (204, 404):
            raise DeliveryError(f"Twilio refused to delete the photo: HTTP {response.status_code}")
