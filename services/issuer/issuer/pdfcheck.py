"""Refusing upstream PDFs that carry active content: scripts, launches, embedded files, actions."""

from __future__ import annotations

import gc
import io
import logging

from pypdf import PdfReader
from pypdf.errors import PdfReadError
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

# Keys whose mere presence means the viewer may run or open something.
_ACTIVE_KEYS = {
    "/JS": "JavaScript",
    "/JavaScript": "JavaScript",
    "/AA": "additional actions (/AA)",
    "/EmbeddedFiles": "embedded file",
    "/EF": "embedded file",
    "/XFA": "XFA form",
    "/RichMediaContent": "rich media",
}
# Action types (/S) that run code, start programs, open other files or send data.
_ACTIVE_ACTIONS = {
    "/JavaScript": "JavaScript",
    "/Launch": "Launch",
    "/SubmitForm": "SubmitForm",
    "/ImportData": "ImportData",
    "/GoToE": "GoToE (embedded file)",
    "/GoToR": "GoToR (remote file)",
    "/Rendition": "Rendition",
    "/RichMediaExecute": "rich media",
}
_ACTIVE_TYPES = {"/EmbeddedFile": "embedded file", "/RichMedia": "rich media", "/FileAttachment": "embedded file"}


# pypdf's warnings about sloppy files are not ours. Set once: setLevel clears every logger's cache,
# a tenth of this check's time when it ran per letter.
logging.getLogger("pypdf").setLevel(logging.ERROR)

# Above this size the parsed objects are worth collecting at once (see active_content).
LARGE_PDF_BYTES = 1024 * 1024


class UnreadablePdf(ValueError):
    """The document cannot be inspected (damaged, or encrypted with a password)."""


def active_content(pdf: bytes) -> str | None:
    """What active content ``pdf`` carries (e.g. '/OpenAction JavaScript'), or None for a plain document.

    Every object of the file is inspected, not only those reachable from the catalogue, so nothing
    hides in an object a viewer would find by repairing the cross-reference table."""
    reader = None
    try:
        reader = PdfReader(io.BytesIO(pdf), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadablePdf("the document is encrypted")
        numbers = [(num, gen) for gen, nums in reader.xref.items() for num in nums]
        numbers += [(num, 0) for num in reader.xref_objStm]
        for num, gen in numbers:
            if found := _inspect(reader.get_object(IndirectObject(num, gen, reader)), None):
                return found
        return _inspect(reader.trailer, None)
    except UnreadablePdf:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise UnreadablePdf(f"the document cannot be read as a PDF ({type(exc).__name__})") from None
    finally:
        if reader is not None:
            # The parsed objects (a 10 MB content stream among them) sit in reference cycles with the
            # reader: free them now, not at some later garbage collection while the letter is sealed.
            # Only for large letters: a full collection per letter took 80 % of the issuer's CPU.
            reader.resolved_objects.clear()
            del reader
            if len(pdf) > LARGE_PDF_BYTES:
                gc.collect()


def _inspect(obj, key: str | None) -> str | None:
    """Walk one object's direct contents (references are inspected as objects of their own)."""
    if isinstance(obj, DictionaryObject):
        for name, label in (("/S", _ACTIVE_ACTIONS), ("/Type", _ACTIVE_TYPES), ("/Subtype", _ACTIVE_TYPES)):
            value = obj.get(name)
            if not isinstance(value, IndirectObject) and value in label:
                return f"{key} {label[value]}" if key else label[value]
        for k, value in obj.items():
            if k in _ACTIVE_KEYS:
                return _ACTIVE_KEYS[k]
            if k == "/OpenAction" and _is_action(value):
                # A destination (array) only opens a page; an action dict on opening is refused.
                action = value.get_object()
                return f"/OpenAction {_ACTIVE_ACTIONS.get(action.get('/S'), str(action.get('/S')))}"
            if found := _inspect(value, k):
                return found
    elif isinstance(obj, ArrayObject):
        for item in obj:
            if found := _inspect(item, key):
                return found
    return None


def _is_action(value) -> bool:
    target = value.get_object() if isinstance(value, IndirectObject) else value
    return isinstance(target, DictionaryObject) and target.get("/S") != "/GoTo"
