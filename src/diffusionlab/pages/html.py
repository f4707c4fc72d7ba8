"""One self-contained HTML page: headings, text, tables, preformatted text and PNG images embedded as base64 data
URIs, with its style inline. The page loads nothing: no external URL, no script, no CDN, so it opens offline, can be
mailed as one file, and shows the same thing in ten years."""

from __future__ import annotations

import base64
import html
from typing import Any, Sequence

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
h3 { margin-top: 1.4em; }
figure { margin: 1em 0; } figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: .92em; }
.note { background: #f6f6f0; border-left: 3px solid #cc9; padding: .5em .8em; }
table { border-collapse: collapse; font-size: .9em; margin: .6em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
code { background: #f2f2f2; padding: 0 .25em; }
"""


def escape(text: Any) -> str:
    """`text` as HTML text. "://" is written with character references, so that no URL appears in the markup even
    when a config or a caption holds one (the page references nothing; a browser shows the same characters)."""
    return html.escape(str(text)).replace("://", "&#58;&#47;&#47;")


def data_uri(png: bytes) -> str:
    """A PNG as a data: URI (the image travels inside the page)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class Page:
    """An HTML page built section by section; `html()` is the whole document."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = [f"<h1>{escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        """A section heading (h2) or a sub-heading (h3)."""
        ident = f' id="{escape(anchor)}"' if anchor else ""
        self.parts.append(f"<h{level}{ident}>{escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        """A paragraph of plain text."""
        self.parts.append(f"<p>{escape(text)}</p>")

    def note(self, text: str) -> None:
        """A boxed remark: why something is missing, and how to get it."""
        self.parts.append(f'<p class="note">{escape(text)}</p>')

    def code(self, text: str) -> None:
        """Preformatted text (a config, a command)."""
        self.parts.append(f"<pre>{escape(text)}</pre>")

    def image(self, png: bytes, caption: str, alt: str | None = None) -> None:
        """A PNG embedded in the page, with its caption."""
        self.parts.append(f'<figure><img src="{data_uri(png)}" alt="{escape(alt or caption)}">'
                          f"<figcaption>{escape(caption)}</figcaption></figure>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A table of text cells."""
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def contents(self, entries: Sequence[tuple[str, str]]) -> None:
        """A list of links to the sections (anchor, title) of this page."""
        items = "".join(f'<li><a href="#{escape(a)}">{escape(t)}</a></li>' for a, t in entries)
        self.parts.append(f"<ul>{items}</ul>")

    def html(self) -> str:
        """The complete document."""
        body = "\n".join(self.parts)
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f"<title>{escape(self.title)}</title>\n<style>{STYLE}</style>\n</head>\n"
                f"<body>\n{body}\n</body>\n</html>\n")


__all__ = ["Page", "data_uri", "escape"]
