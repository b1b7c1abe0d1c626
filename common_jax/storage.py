"""What a storage failure means, and what to do about it: retry, quarantine or stop.

Every exception from reading or writing a checkpoint, a workdir or any user-given URL
(local files, ``gs://`` through gcsfs and TensorStore, etils.epath) falls into one class
(``classify``):

- ``corrupt``: the bytes on disk are proven unusable (a file that is not valid JSON, a
  TensorStore chunk that fails to decode or is shorter than its index says, a file or item
  the checkpoint's own metadata needs that is missing). Only this class lets a checkpoint be
  moved aside (``common_jax.checkpoint``).
- ``transient``: timeouts, connection resets and refusals, HTTP 408/429/5xx, credential
  refreshes, TensorStore UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED, and any
  other ``OSError`` that is not "not found" or "permission denied". ``retry`` retries these
  with bounded exponential backoff (``RETRY_BUDGET_S`` in all), then stops with one line.
- ``mismatch``: the checkpoint holds another structure, shape or dtype than the config asks
  for (a config change, not damage).
- ``denied``: no credentials, permission denied, no such bucket.
- ``other``: anything else. Never treated as damage: the run stops and nothing is moved.

``check_writable`` / ``check_readable`` test a user-given location before anything is
compiled, within ``PREFLIGHT_TIMEOUT_S`` even where the client would retry for minutes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from typing import Callable

from common_jax import paths

log = logging.getLogger(__name__)

RETRY_BUDGET_S = 60.0  # total backoff of one operation's retries
PREFLIGHT_TIMEOUT_S = 25.0
TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}


class StorageError(ValueError):
    """A storage operation failed for good; the message is the one line the user sees."""


_CORRUPT = re.compile(r"DATA_LOSS|OUT_OF_RANGE: Error reading|NOT_FOUND: Error reading|"
                      r"Error decoding|decompress|"
                      r"Truncated|Unknown frame descriptor|Corrupt|checksum mismatch|"
                      r"was not found in the checkpoint|not a valid|Invalid .*(header|magic)",
                      re.IGNORECASE)
_MISMATCH = re.compile(r"is not compatible with the stored shape|pytree structure error|"
                       r"Expected (tuple|list|dict), got|different (types|structure)",
                       re.IGNORECASE)
_TRANSIENT = re.compile(r"UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|ABORTED:|"
                        r"(HTTP|status|code)\D{0,20}(408|429|50[0-4])\b|timed out|"
                        r"Connection (reset|refused|"
                        r"aborted)|Cannot connect to host|Temporary failure|Server disconnected|"
                        r"Service Unavailable|Too Many Requests",
                        re.IGNORECASE)
_DENIED = re.compile(r"PERMISSION_DENIED|Forbidden|\b40[13]\b|Permission denied|"
                     r"UNAUTHENTICATED|credentials|bucket does not exist|NoSuchBucket",
                     re.IGNORECASE)


def chain(error: BaseException) -> list:
    """``error`` and its causes, outermost first."""
    out, seen = [], set()
    while error is not None and id(error) not in seen:
        out.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return out


def _text(error: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}" for e in chain(error))


def _http_code(error: BaseException) -> int | None:
    for e in chain(error):
        code = getattr(e, "code", None) or getattr(e, "status", None)
        if isinstance(code, int) and 100 <= code < 600:
            return code
    return None


def classify(error: BaseException) -> str:
    """'corrupt', 'transient', 'mismatch', 'denied' or 'other' (see the module docstring)."""
    causes, text = chain(error), _text(error)
    code = _http_code(error)
    if any(isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)) for e in causes):
        return "corrupt"
    if _MISMATCH.search(text):
        return "mismatch"
    if code in (401, 403) or any(isinstance(e, PermissionError) for e in causes) or (
            code not in TRANSIENT_HTTP and _DENIED.search(text)):
        return "denied"
    if code in TRANSIENT_HTTP or any(isinstance(e, (TimeoutError, ConnectionError))
                                     for e in causes):
        return "transient"
    if _CORRUPT.search(text):
        return "corrupt"
    if _TRANSIENT.search(text):
        return "transient"
    if any(isinstance(e, FileNotFoundError) for e in causes):
        return "corrupt"  # a file the checkpoint's own listing or metadata names is gone
    if any(isinstance(e, OSError) and not isinstance(
            e, (FileExistsError, IsADirectoryError, NotADirectoryError)) for e in causes):
        return "transient"
    return "other"


def reason(error: BaseException) -> str:
    """A short cause for the user: no credentials, permission denied, no such bucket,
    network unreachable, HTTP <code>, or the error's own first line."""
    text, code = _text(error), _http_code(error)
    if re.search(r"DefaultCredentialsError|could not (automatically )?determine credentials|"
                 r"no credentials", text, re.IGNORECASE):
        return "no credentials (set GOOGLE_APPLICATION_CREDENTIALS or run gcloud auth " \
               "application-default login)"
    if re.search(r"bucket does not exist|NoSuchBucket", text, re.IGNORECASE):
        return "no such bucket"
    if code in (401, 403) or re.search(r"Forbidden|PERMISSION_DENIED|Permission denied",
                                       text, re.IGNORECASE):
        return "permission denied"
    if re.search(r"Name or service not known|nodename nor servname|Temporary failure in name "
                 r"resolution|getaddrinfo", text, re.IGNORECASE):
        return "network unreachable (the host name does not resolve)"
    if re.search(r"Cannot connect to host|Connection refused|Connect call failed|"
                 r"Network is unreachable", text, re.IGNORECASE):
        return "network unreachable (no connection to the storage server)"
    if code is not None:
        return f"HTTP {code}"
    last = chain(error)[-1]
    return f"{type(last).__name__}: {' '.join(str(last).split())[:200]}"


def retry(fn: Callable, what: str, budget_s: float | None = None):
    """``fn()``, retrying transient errors with backoff 1, 2, 4, ... s (``budget_s`` in all,
    default ``RETRY_BUDGET_S``); then ``StorageError('cannot <what>: <reason>')``. Errors of
    any other class are raised unchanged at once."""
    budget = RETRY_BUDGET_S if budget_s is None else budget_s
    waited, delay = 0.0, 1.0
    while True:
        try:
            return fn()
        except Exception as error:  # noqa: BLE001 - classified right here
            if classify(error) != "transient":
                raise
            if waited >= budget:
                raise StorageError(f"cannot {what}: {reason(error)} (still failing after "
                                   f"{waited:.0f} s of retries)") from error
            pause = min(delay, budget - waited)
            log.warning("%s failed (%s); retrying in %.0f s", what, reason(error), pause)
            time.sleep(pause)
            waited, delay = waited + pause, delay * 2


class _ClientRetries(logging.Handler):
    """Collects the errors gcsfs retries on (its debug lines) while a check waits for it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.errors: list = []

    def emit(self, record):
        message = record.getMessage()
        if "retrying after exception" in message or "out of retries" in message:
            self.errors.append(message)


def _within_deadline(fn: Callable, what: str, timeout: float):
    """``fn()`` in a helper thread; StorageError after ``timeout`` s, or as soon as the
    client has failed to connect twice (it would otherwise retry for about a minute)."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            result["error"] = error

    handler, client = _ClientRetries(), logging.getLogger("gcsfs")
    level, propagate = client.level, client.propagate
    client.addHandler(handler)
    client.setLevel(logging.DEBUG)
    client.propagate = False
    thread = threading.Thread(target=target, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            thread.join(0.1)
            refused = [e for e in handler.errors if re.search(
                r"connect|resolution|not known|unreachable", e, re.IGNORECASE)]
            if len(refused) >= 2:
                raise StorageError(f"cannot {what}: {reason(ConnectionError(refused[-1]))}")
        if thread.is_alive():
            last = f"; last error: {handler.errors[-1][:200]}" if handler.errors else ""
            raise StorageError(f"cannot {what}: no answer within {timeout:.0f} s{last}")
    finally:
        client.removeHandler(handler)
        client.setLevel(level)
        client.propagate = propagate
    if "error" in result:
        error = result["error"]
        if isinstance(error, StorageError):
            raise error
        raise StorageError(f"cannot {what}: {reason(error)}") from error
    return result.get("value")


def check_writable(location: str, timeout: float | None = None) -> None:
    """Creates ``location`` (a folder; on object stores nothing until a file is written) and
    writes and deletes a small marker in it; StorageError ``cannot write <location>:
    <reason>`` otherwise. Local folders are created as training would create them."""

    def probe():
        paths.makedirs(location)
        marker = paths.join(location, f".write-check-{uuid.uuid4().hex}")
        paths.write_bytes(marker, b"")
        paths.remove(marker)

    _within_deadline(probe, f"write {location}",
                     PREFLIGHT_TIMEOUT_S if timeout is None else timeout)


def exists(location: str, timeout: float | None = None) -> bool:
    """``paths.exists(location)`` within ``PREFLIGHT_TIMEOUT_S``; StorageError ``cannot read
    <location>: <reason>`` when the store cannot be reached or refuses."""
    return bool(_within_deadline(lambda: paths.exists(location), f"read {location}",
                                 PREFLIGHT_TIMEOUT_S if timeout is None else timeout))


def check_readable(location: str, what: str = "", timeout: float | None = None) -> None:
    """StorageError unless ``location`` exists (``what`` is added to the message)."""
    if not exists(location, timeout):
        raise StorageError(f"cannot read {location}: it does not exist{what}")
