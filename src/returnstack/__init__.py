"""returnstack: an open-source, self-hostable returns platform."""

__version__ = "0.1.0"
