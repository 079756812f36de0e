"""Tokens never reach a log: every log record made in a vae_lab process has Hugging Face tokens blanked.

A server's error body can echo the request's `Authorization: Bearer hf_...` header, and huggingface_hub logs such
errors through its own logger (the background log sync's CommitScheduler does). Redacting at record creation
(logging.setLogRecordFactory) covers every handler the same way: the console, train.log, handlers Hydra or a
library add later, and logging.lastResort. A handler that fails to write (a closed stream) prints the exception
being handled, whose chain may hold the server's error: that report is redacted too (`logging.Handler.handleError`).
"""

import logging
import threading

from vae_lab.hub import redact

_busy = threading.local()  # redact() may log (huggingface_hub reading its token): no recursion


def redact_record(record: logging.LogRecord) -> None:
    """Blank tokens in the record's message, its formatted exception and its stack, in place."""
    try:
        message = record.getMessage()
    except Exception:  # bad %-args: logging reports those itself, after this
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:  # Formatter uses exc_text when set: the traceback is redacted
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install() -> None:
    """Make every later log record token-free (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts_tokens", False):
        return

    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if not getattr(_busy, "on", False):
            _busy.on = True
            try:
                redact_record(record)
            finally:
                _busy.on = False
        return record

    make_record.redacts_tokens = True
    logging.setLogRecordFactory(make_record)
    _redact_handler_errors()


def _redact_handler_errors() -> None:
    """logging.Handler.handleError writes the failing handler's exception to stderr with its whole chain: a log call
    made while handling a Hub error (the record itself already redacted) chains that error, token included."""
    import contextlib
    import io
    import sys

    report = logging.Handler.handleError
    if getattr(report, "redacts_tokens", False):
        return

    def handle_error(self, record: logging.LogRecord) -> None:
        text = io.StringIO()
        with contextlib.redirect_stderr(text):
            report(self, record)
        if text.getvalue() and sys.stderr is not None:
            sys.stderr.write(redact(text.getvalue()))

    handle_error.redacts_tokens = True
    logging.Handler.handleError = handle_error
