"""Email rendering: Jinja2 templates (text + HTML) that applications can override."""

from usermgmt.email.rendering import EmailRenderer, RenderedEmail

__all__ = ["EmailRenderer", "RenderedEmail"]
