"""Letter rendering: the convocation PDF the issuer produces when upstream sends none."""

from .fonts import FontNotFoundError, find_fonts
from .letter import TEXTS, format_appointment, render_convocation_pdf

__all__ = ["TEXTS", "FontNotFoundError", "find_fonts", "format_appointment", "render_convocation_pdf"]
