"""Log lines a request cannot forge.

Much of what the portal logs comes from a request: the username tried at a failed login, a path,
a header. A newline in it would start what reads as a new log line ("... INFO admin logged in"),
and other control characters can rewrite a terminal. `EscapingFormatter` (settings.LOGGING, on
the one console handler every logger writes through) formats a record as usual, then escapes
every control character of that line (a newline becomes the two characters \\n, ESC \\x1b). A
traceback or stack keeps its line breaks, but each of its lines is indented and escaped, so the
only line of a record that starts at the margin is its first one, with the timestamp.
"""

from __future__ import annotations

import logging
import re

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
INDENT = "    "


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_control(text: str) -> str:
    """`text` on one line: every control character written as its escape."""
    return _CONTROL.sub(_escaped, text)


def _indented(block: str) -> str:
    return "\n".join(INDENT + escape_control(line) for line in block.split("\n"))


class EscapingFormatter(logging.Formatter):
    """logging.Formatter whose records are one escaped line, plus an indented traceback or stack."""

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, without caching the traceback text on the record (other
        # handlers, pytest's among them, format it their own way).
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = escape_control(self.formatMessage(record))
        if record.exc_info:
            text += "\n" + _indented(self.formatException(record.exc_info))
        elif record.exc_text:
            text += "\n" + _indented(record.exc_text)
        if record.stack_info:
            text += "\n" + _indented(self.formatStack(record.stack_info))
        return text
