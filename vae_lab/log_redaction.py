"""Tokens never reach a log: every log record made in a vae_lab process has Hugging Face tokens blanked.

A server's error body can echo the request's `Authorization: Bearer hf_...` header, and huggingface_hub logs such
errors through its own logger (the background log sync's CommitScheduler does). Redacting at record creation
(logging.setLogRecordFactory) covers every handler the same way: the console, train.log, handlers Hydra or a
library add later, and logging.lastResort.
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
