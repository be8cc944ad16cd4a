"""One structlog JSON setup for every service, with redaction of secrets and patient data."""

from __future__ import annotations

import logging
import sys

import structlog
from opentelemetry import trace

from shared.redact import scrub

# Keys whose values never reach a log line, whatever code logs them.
REDACT_KEYS = frozenset(
    {
        "phone",
        "mobile",
        "email",
        "otp",
        "code",
        "link",
        "link_secret",
        "secret",
        "token",
        "password",
        "authorization",
        "cookie",
        "body",
        "document",
        "to",
    }
)
# Free text is scrubbed too (shared/redact.py): numbers, addresses, link secrets.
_NOT_SCRUBBED = frozenset({"timestamp", "level", "logger", "service"})


def _redact(_logger, _name, event_dict):
    for key in event_dict.keys() & REDACT_KEYS:
        event_dict[key] = "[redacted]"
    event_dict.pop("color_message", None)
    for key, value in event_dict.items():
        if isinstance(value, str) and key not in _NOT_SCRUBBED and not key.endswith("_id"):
            event_dict[key] = scrub(value)
    return event_dict


def _trace_id(_logger, _name, event_dict):
    """The letter's trace (shared/tracing.py) on each line logged inside one: from a log line to its trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
    return event_dict


def configure_logging(service: str, level: str = "INFO") -> None:
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _trace_id,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _redact,
    ]
    structlog.configure(
        # A line below the level is dropped before any processor runs (the time stamp and the
        # redaction were paid for every INFO line a WARNING service then discarded).
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                lambda _l, _n, ed: {**ed, "service": service},
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The access log would print every path; ours carry only ids, but keep the noise out.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("aiosmtplib").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Font subsetting (fontTools) would write dozens of INFO lines per rendered letter, WeasyPrint's
    # progress seven ("Step 1 - Fetching and parsing HTML"); its warnings still get through.
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)
    # The AMQP client at DEBUG prints every frame it sends or receives, message bodies included: a sealed
    # letter and its link sealed for the mailer on one line (docs/architecture.md#threat-model). Never below INFO.
    for name in ("aiormq", "pamqp", "aio_pika"):
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
