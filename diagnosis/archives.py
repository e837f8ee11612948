"""Reading what a clinician sends, before anything touches the database: the upload's size cap,
the image members of a ZIP, the CSV that says where each goes, and the dates written in it.

No ORM here: the services in diagnosis/services/ decide what is stored.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Self

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from diagnosis.budget import UploadBudget

CSV_MAX_BYTES = 5 * 1024 * 1024
# The longest value a batch CSV's cell may hold: a file name (255 on common file systems); every
# other column (external id, lesion label, body site, date) is shorter.
CSV_MAX_CELL_CHARS = 255
# C0 control characters (NUL among them: PostgreSQL refuses it in text) and DEL. Tab and the line
# feed are text; a CR is one only as part of a CRLF line end, which is read as LF first.
CSV_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
BATCH_CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "file": ("file", "filename", "file_name", "image", "image_file"),
    "patient": ("patient", "patient_external_id", "patient_id", "external_id"),
    "lesion": ("lesion", "lesion_label", "label"),
    "body_site": ("body_site", "localization", "site"),
    "captured_at": ("captured_at", "capture_date", "date"),
}


_BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB")


def human_size(n_bytes: int, *, unit: str | None = None) -> str:
    """A size in binary units, as the portal documents its limits (10 MiB): in `unit` when given
    ("MiB": a limit reads the same whatever its value), else the largest unit that keeps the
    number at 1 or more ("512 bytes", "4.0 KiB", "1.2 GiB")."""
    if unit is None and n_bytes < 1024:
        return f"{n_bytes} bytes"
    size, chosen = n_bytes / 1024, _BINARY_UNITS[0]
    for larger in _BINARY_UNITS[1:]:
        if chosen == unit or (unit is None and size < 1024):
            break
        size, chosen = size / 1024, larger
    return f"{size:.1f} {chosen}"


def too_large(max_bytes: int) -> str:
    return f"the file is larger than the {human_size(max_bytes, unit='MiB')} limit"


def read_capped(handle: IO[bytes], limit: int) -> bytes:
    """At most `limit` bytes and one more: that byte is how the caller tells the file is too
    large, without reading a huge file whole (a declared size may lie)."""
    return handle.read(limit + 1)


def normalise_member_name(name: str) -> str:
    name = name.replace("\\", "/").strip()
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def csv_header_map(fieldnames: Sequence[str]) -> dict[str, str]:
    """Our column name -> the CSV's header, for the aliases in BATCH_CSV_COLUMNS."""
    normalised = {(h or "").strip().lower().replace(" ", "_"): h for h in fieldnames}
    found: dict[str, str] = {}
    for column, aliases in BATCH_CSV_COLUMNS.items():
        for alias in aliases:
            if alias in normalised:
                found[column] = normalised[alias]
                break
    return found


def _csv_error(message: str) -> ValidationError:
    return ValidationError({"archive": f"The CSV {message}."})


def _csv_text(csv_bytes: bytes) -> str:
    """The CSV as text with LF line ends, or a ValidationError naming the line of the first
    character no cell may hold (a NUL, another control character, a CR that ends no line)."""
    try:
        text = csv_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError({"archive": "The CSV is not UTF-8 text."}) from exc
    text = text.replace("\r\n", "\n")
    found = CSV_CONTROL_CHARACTERS.search(text)
    if found is not None:
        char = found.group()
        what = (
            "a carriage return (CR) that does not end a line"
            if char == "\r"
            else f"a control character (U+{ord(char):04X})"
        )
        line = text.count("\n", 0, found.start()) + 1
        raise _csv_error(f"has {what} on line {line}; save it as plain UTF-8 text with ordinary line ends")
    return text


def csv_rows(csv_bytes: bytes, *, max_rows: int | None = None) -> dict[str, dict[str, str]]:
    """The batch CSV's rows by normalised file name, each with our column names.

    Every way a CSV can be unreadable is a ValidationError naming the line (never csv.Error): a
    control character, a cell longer than CSV_MAX_CELL_CHARS or over several lines, a quote the
    csv module cannot read, more rows than a batch may hold files (`max_rows`, default
    SKINPORTAL_MAX_FILES_PER_BATCH: each row not matched is reported and stored as refused).
    """
    text = _csv_text(csv_bytes)
    if max_rows is None:
        max_rows = settings.SKINPORTAL_MAX_FILES_PER_BATCH
    # strict: a stray quote is an error, not a guess (an unclosed one swallowed the rest of the file).
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows: dict[str, dict[str, str]] = {}
    try:
        columns = csv_header_map(reader.fieldnames or [])
        if "file" not in columns:
            raise ValidationError(
                {
                    "archive": "The CSV needs a 'file' column naming each image (and optionally patient, lesion, "
                    "body_site, captured_at)."
                }
            )
        for count, raw in enumerate(reader, start=1):
            if count > max_rows:
                raise _csv_error(f"lists more than {max_rows} files; a batch holds at most {max_rows}")
            row = {column: (raw.get(header) or "").strip() for column, header in columns.items()}
            _csv_cells_check(row, line=reader.line_num)  # the row's last line
            name = normalise_member_name(row["file"])
            if name:
                rows[name] = row
    except csv.Error as exc:
        line = reader.reader.line_num  # the DictReader's own count stops at the last good row
        if "field larger than field limit" in str(exc):  # the csv module's own cap (131,072)
            raise _csv_error(f"has a cell longer than {CSV_MAX_CELL_CHARS} characters on line {line}") from exc
        raise _csv_error(f"could not be read at line {line} ({exc})") from exc
    return rows


def _csv_cells_check(row: dict[str, str], *, line: int) -> None:
    for column, value in row.items():
        if len(value) > CSV_MAX_CELL_CHARS:
            raise _csv_error(f"has a {column} cell longer than {CSV_MAX_CELL_CHARS} characters on line {line}")
        if "\n" in value:  # a quoted cell over several lines: no file name, id or label is
            raise _csv_error(f"has a {column} cell that runs over several lines, ending on line {line}")


def parse_date(value: str, *, what: str) -> dt.date:
    try:
        parsed = dt.date.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValidationError(f"{what} {value!r} is not a date (YYYY-MM-DD)") from exc
    if parsed > timezone.localdate():
        raise ValidationError(f"{what} {parsed} is in the future")
    return parsed


@dataclass
class Member:
    """One file of a batch: a ZIP member or a single upload."""

    name: str
    data: bytes | None  # None: could not be read (error says why)
    error: str = ""


# ZIP bombs, refused from the central directory before anything is inflated. JPEG and PNG are
# compressed already: a ZIP shrinks them by a few percent, so a member that inflates more than
# ZIP_MAX_RATIO times is built to expand (zeros), not a photograph. Under ZIP_RATIO_FLOOR a member
# cannot amplify much whatever its ratio (a small CSV may compress 20 times).
ZIP_MAX_RATIO = 100
ZIP_RATIO_FLOOR = 64 * 1024
# Entries besides the images: a folder and a __MACOSX companion per image, and a few more.
ZIP_ENTRIES_PER_IMAGE = 3
ZIP_EXTRA_ENTRIES = 100


class ZipMembers:
    """The image members of a ZIP, each read (size-capped) only when iterated, and its CSV.

    Only one member is in memory at a time, whatever the archive's size. Use as a context
    manager; the archive stays open while iterating.

    A ZIP bomb is refused from the central directory before any member is inflated: too many
    entries, entries whose data overlap (one member inflated many times over), a member that
    inflates more than ZIP_MAX_RATIO times, or members that together unpack to more than the
    request's budget of file bytes (diagnosis.budget). Each member read pays its size first.
    """

    def __init__(
        self, archive: IO[bytes], *, max_bytes: int, max_files: int, budget: UploadBudget | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.budget = budget if budget is not None else UploadBudget.for_request()
        _check_entry_count(archive, max_files=max_files)
        try:
            self.zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ValidationError({"archive": "The file is not a readable ZIP archive."}) from exc
        try:
            self._check_no_overlap()
            self._scan(max_files)
        except Exception:
            self.zf.close()
            raise

    def _scan(self, max_files: int) -> None:
        infos = [
            info
            for info in self.zf.infolist()
            if not info.is_dir()
            and not info.filename.startswith("__MACOSX/")
            and not normalise_member_name(info.filename).rsplit("/", 1)[-1].startswith(".")
        ]
        csvs = [info for info in infos if info.filename.lower().endswith(".csv")]
        if len(csvs) > 1:
            raise ValidationError({"archive": f"The ZIP holds {len(csvs)} CSV files; put at most one in it."})
        self.images = [info for info in infos if not info.filename.lower().endswith(".csv")]
        if not self.images:
            raise ValidationError({"archive": "The ZIP holds no files besides the CSV."})
        if len(self.images) > max_files:
            raise ValidationError(
                {"archive": f"At most {max_files} images per batch; the ZIP holds {len(self.images)}."}
            )
        if csvs and csvs[0].file_size > CSV_MAX_BYTES:
            raise ValidationError({"archive": "The CSV in the ZIP is larger than 5 MiB."})
        # Members over the size cap are refused without being read, so they cost nothing.
        self._check_declared_sizes([*csvs, *(info for info in self.images if info.file_size <= self.max_bytes)])
        self.csv_bytes = None
        if csvs:
            self.budget.charge_file_bytes(csvs[0].file_size, what="the CSV")  # fits: checked just above
            data, error = self._read(csvs[0], CSV_MAX_BYTES)
            if data is None:
                raise ValidationError({"archive": f"The CSV {error}."})
            self.csv_bytes = data

    def _check_no_overlap(self) -> None:
        """Each entry's local header and data must lie apart from every other's and before the
        central directory; zipfile (before Python 3.12) does not check. Entries that share their
        bytes let a small archive inflate one member hundreds of times."""
        spans: list[tuple[int, int]] = []
        fp = self.zf.fp
        for info in self.zf.infolist():
            start = info.header_offset
            fp.seek(start)
            header = fp.read(zipfile.sizeFileHeader)
            if len(header) == zipfile.sizeFileHeader and header[:4] == zipfile.stringFileHeader:
                fields = struct.unpack(zipfile.structFileHeader, header)
                name_length, extra_length = fields[zipfile._FH_FILENAME_LENGTH], fields[zipfile._FH_EXTRA_FIELD_LENGTH]
            else:  # not a local header: reading this member fails on its own, and is reported so
                name_length, extra_length = 0, 0
            spans.append((start, start + zipfile.sizeFileHeader + name_length + extra_length + info.compress_size))
        spans.sort()
        ends = [start for start, _ in spans[1:]] + [self.zf.start_dir]
        for (start, end), next_start in zip(spans, ends):
            if end > next_start:
                raise ValidationError(
                    {
                        "archive": "The ZIP's entries overlap (several of them share the same compressed data, "
                        "so it would unpack the same bytes many times over): it is refused. Make a new ZIP of "
                        "the images."
                    }
                )

    def _check_declared_sizes(self, to_read: Sequence[zipfile.ZipInfo]) -> None:
        """Refuse, before inflating anything, a member that expands like a bomb and members that
        together would unpack to more than the request's budget."""
        for info in to_read:
            if info.file_size > ZIP_RATIO_FLOOR and info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1):
                ratio = info.file_size / max(info.compress_size, 1)
                raise ValidationError(
                    {
                        "archive": f"{normalise_member_name(info.filename)} would inflate {ratio:,.0f} times "
                        f"({human_size(info.compress_size)} to {human_size(info.file_size)}), more than the "
                        f"{ZIP_MAX_RATIO} times a ZIP bomb is refused at; JPEG and PNG files barely compress."
                    }
                )
        total = sum(info.file_size for info in to_read)
        if total > self.budget.file_bytes_left:
            raise ValidationError(
                {
                    "archive": f"The ZIP's files unpack to {human_size(total)}, more than the "
                    f"{human_size(self.budget.max_file_bytes, unit='MiB')} of image files one upload or batch may "
                    "hold; nothing was stored: split it into smaller ZIPs."
                }
            )

    def _read(self, info: zipfile.ZipInfo, limit: int) -> tuple[bytes | None, str]:
        try:
            with self.zf.open(info) as fh:
                return read_capped(fh, limit), ""  # the header's size may lie
        except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, OSError, EOFError) as exc:
            return None, f"could not be extracted ({type(exc).__name__})"

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Member]:
        """Each image member, read when its turn comes. Raises BudgetExceeded (the whole request
        is refused) when a member would take the request past its budget."""
        for info in self.images:
            name = normalise_member_name(info.filename)
            if info.file_size > self.max_bytes:
                yield Member(name, None, too_large(self.max_bytes))
                continue
            # zipfile stops at the declared size (and checks the CRC there): it is what may inflate.
            self.budget.charge_file_bytes(info.file_size, what=name)
            data, error = self._read(info, self.max_bytes)
            if data is not None and len(data) > self.max_bytes:
                data, error = None, too_large(self.max_bytes)
            yield Member(name, data, error)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.zf.close()


def _check_entry_count(archive: IO[bytes], *, max_files: int) -> None:
    """Refuse an archive with absurdly many entries from its end record, before zipfile builds
    an object per entry (a 50 MB central directory of a million entries is a few GB of them).
    Anything unreadable here is left to zipfile, which says the file is not a ZIP."""
    limit = ZIP_ENTRIES_PER_IMAGE * max_files + ZIP_EXTRA_ENTRIES
    try:
        end_record = zipfile._EndRecData(archive)  # zipfile's own reader of the end record
        archive.seek(0)
    except (OSError, ValueError, struct.error):
        return
    entries = end_record[zipfile._ECD_ENTRIES_TOTAL] if end_record is not None else 0
    if entries > limit:
        raise ValidationError(
            {
                "archive": f"The ZIP has {entries:,} entries; a batch of at most "
                f"{max_files} images may have {limit:,} (folders and other files included)."
            }
        )
