"""Documents in: plain text, Markdown, HTML (tags stripped), PDF-extracted text and JSONL records.

Every file becomes `Document(doc_id, text, source)`: JSONL rows are identified by their `id`
field (or the one named by `id_field`), other files by their path. A file that cannot be read is
named, skipped and counted in `ReadReport.skipped`, so one bad file does not stop an index build.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.errors import LmlabError

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".pdf.txt"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}


@dataclass
class Document:
    doc_id: str
    text: str
    source: str  # the file it came from (and :line for JSONL rows)

    @property
    def digest(self) -> str:
        """Content hash: an incremental update re-indexes a document only when this changes."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass
class ReadReport:
    documents: list[Document] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    def summary(self) -> str:
        s = f"read {len(self.documents)} documents"
        if self.skipped:
            s += f"; skipped {len(self.skipped)} unreadable: " + "; ".join(f"{p} ({why})" for p, why in self.skipped)
        return s


def read_documents(paths, id_field: str = "id", text_field: str = "text") -> ReadReport:
    """Read files and folders (recursively, in sorted order); unknown suffixes are read as text."""
    report = ReadReport()
    for path in _expand(paths):
        try:
            report.documents.extend(read_file(path, id_field, text_field))
        except (LmlabError, OSError, UnicodeDecodeError) as e:
            report.skipped.append((str(path), str(e).removeprefix(f"{path}: ")))
    seen: dict[str, str] = {}
    for d in report.documents:
        if d.doc_id in seen:
            raise LmlabError(f"{d.source}: duplicate document id {d.doc_id!r} (first at {seen[d.doc_id]})")
        seen[d.doc_id] = d.source
    return report


def read_file(path: str | Path, id_field: str = "id", text_field: str = "text") -> list[Document]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path, id_field, text_field)
    if suffix == ".pdf":
        raise LmlabError(f"{path}: binary PDF; extract its text first (e.g. pdftotext) and index the .txt")
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise LmlabError(f"{path}: binary file (NUL bytes), not text")
    text = raw.decode("utf-8")
    if suffix in HTML_SUFFIXES:
        text = html_to_text(text)
    if not text.strip():
        raise LmlabError(f"{path}: no text")
    return [Document(str(path), text, str(path))]


def html_to_text(html: str) -> str:
    """Main text of a page via trafilatura (boilerplate removed); all visible text as a fallback
    for fragments trafilatura finds no article in."""
    import trafilatura

    text = trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True)
    if text and text.strip():
        return text
    from html.parser import HTMLParser

    class Strip(HTMLParser):
        parts: list[str] = []
        skip = 0

        def handle_starttag(self, tag, attrs):
            self.skip += tag in ("script", "style")

        def handle_endtag(self, tag):
            self.skip -= tag in ("script", "style") and self.skip > 0

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    p = Strip()
    p.parts = []
    p.feed(html)
    return " ".join(" ".join(p.parts).split())


def _read_jsonl(path: Path, id_field: str, text_field: str) -> list[Document]:
    from lmlab.records import iter_jsonl

    docs = []
    for n, row in iter_jsonl(path):
        if not isinstance(row.get(text_field), str):
            raise LmlabError(f"{path}:{n}: no string {text_field!r} field")
        if row.get(id_field) is None:
            raise LmlabError(f"{path}:{n}: no {id_field!r} field (name the id field with --id-field; "
                             f"fields here: {', '.join(row)})")
        docs.append(Document(str(row[id_field]), row[text_field], f"{path}:{n}"))
    return docs


def _expand(paths) -> list[Path]:
    out = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")))
        else:
            out.append(p)  # a missing file is reported as skipped by read_documents
    return out
