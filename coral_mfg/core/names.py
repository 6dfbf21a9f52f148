"""Names people give things (zones, the station, a topic prefix), checked where they enter.

A name is shown as written everywhere a person reads it: events, the web
view, the screen. Where it becomes part of something with a grammar of its
own, an MQTT topic level or a file name, it goes through :func:`name_part`,
which percent-encodes every character that would change the meaning
(``/``, ``+``, ``#``, ``%``) so ``Press #2`` can never become a wildcard or
``a/b`` two levels.
"""

from __future__ import annotations

import unicodedata

MAX_NAME = 64
#: Kept as they are in a topic level or a file name; every other character of a
#: name is percent-encoded (its UTF-8 bytes as %XX).
_PLAIN = frozenset("-_. ")


def name_problem(value: object) -> str | None:
    """Why ``value`` cannot name a zone, a station or a line, or None when it can."""
    if not isinstance(value, str) or not value.strip():
        return "a non-empty name"
    if len(value) > MAX_NAME:
        return f"a name of at most {MAX_NAME} characters"
    bad = next((c for c in value if _control(c)), None)
    if bad is not None:
        return f"a name without control characters (it holds U+{ord(bad):04X})"
    return None


def _control(c: str) -> bool:
    """Control, surrogate and unassigned characters: they break topics, logs and pages."""
    return unicodedata.category(c) in ("Cc", "Cs", "Cn")


def name_part(name: str) -> str:
    """``name`` as one MQTT topic level or one file name: reversible, never a wildcard,
    a separator or a hidden file. Letters and digits of any script stay as they are."""
    out = []
    for i, c in enumerate(name):
        if (c.isalnum() or c in _PLAIN) and not (i == 0 and c == "."):
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
    return "".join(out)


def prefix_problem(value: str) -> str | None:
    """Why ``value`` cannot start every topic, or None: it may hold several levels
    (``plant/line-1``), but never a wildcard, a control character or ``$``."""
    text = value.strip("/")
    if not text:
        return "a topic prefix such as coral_mfg or plant/line-1"
    if "+" in text or "#" in text:
        return "a topic prefix without the wildcards + and #"
    if text.startswith("$"):
        return "a topic prefix that does not start with $ (reserved for the broker)"
    if any(_control(c) for c in text):
        return "a topic prefix without control characters"
    if "" in text.split("/"):
        return "a topic prefix without empty levels (//)"
    return None


def display_name(label: str) -> str:
    """``rotten_apple`` as people read it: ``Rotten apple``."""
    text = label.replace("_", " ").strip()
    return text[:1].upper() + text[1:]
