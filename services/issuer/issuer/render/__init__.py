"""Letter rendering: the tagged (PDF/UA-1) convocation PDF the issuer produces when upstream sends none."""

from .fonts import FontNotFoundError, find_fonts
from .letter import letter_html, render_convocation_pdf

__all__ = ["FontNotFoundError", "find_fonts", "letter_html", "render_convocation_pdf"]
