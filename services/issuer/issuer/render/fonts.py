"""Locate the DejaVu Sans TTF files the letter is set in.

The letter names its font files (``@font-face``) rather than letting fontconfig pick whatever is
installed: DejaVu Sans has the en dashes, curly apostrophes and Nordic letters that real patient names
contain, and the same files give the same letter on every machine. A missing file is an error that
says what to install, not a silent fallback to another font.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

REGULAR_FILE = "DejaVuSans.ttf"
BOLD_FILE = "DejaVuSans-Bold.ttf"

# Where the usual distributions install DejaVu; the first directory holding both files wins.
SEARCH_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/dejavu"),  # Debian, Ubuntu (fonts-dejavu-core)
    Path("/usr/share/fonts/dejavu-sans-fonts"),  # Fedora, RHEL (dejavu-sans-fonts)
    Path("/usr/share/fonts/dejavu"),  # Alpine (font-dejavu)
    Path("/usr/share/fonts/TTF"),  # Arch (ttf-dejavu)
    Path("/usr/local/share/fonts/dejavu"),  # FreeBSD (dejavu)
    Path("/usr/local/share/fonts"),
)


class FontNotFoundError(RuntimeError):
    """The DejaVu Sans TTF files are not installed where the renderer looks."""


@dataclass(frozen=True, slots=True)
class FontFiles:
    """Paths of the regular and bold faces of one font family."""

    regular: Path
    bold: Path


def _in_dir(directory: Path) -> FontFiles | None:
    regular, bold = directory / REGULAR_FILE, directory / BOLD_FILE
    return FontFiles(regular, bold) if regular.is_file() and bold.is_file() else None


@functools.lru_cache(maxsize=1)
def _default_fonts() -> FontFiles | None:
    # Cached: the file system does not change under a running service, and a letter may be
    # rendered for every convocation.
    for directory in SEARCH_DIRS:
        if found := _in_dir(directory):
            return found
    return None


def find_fonts(font_dir: Path | None = None) -> FontFiles:
    """Return DejaVu Sans regular and bold, from ``font_dir`` if given, else from the system dirs.

    Raises :class:`FontNotFoundError` naming every directory searched, so an operator sees at once
    which package to install or which setting to fix.
    """
    if font_dir is not None:
        found = _in_dir(Path(font_dir))
        searched: tuple[Path, ...] = (Path(font_dir),)
    else:
        found = _default_fonts()
        searched = SEARCH_DIRS
    if found is None:
        raise FontNotFoundError(
            f"{REGULAR_FILE} and {BOLD_FILE} not found in "
            + ", ".join(str(d) for d in searched)
            + "; install the DejaVu fonts (Debian: apt-get install fonts-dejavu-core)"
        )
    return found
