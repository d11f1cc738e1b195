"""caselink: joins public-sector case records around the citizen, as events happen."""

__version__ = "0.1.0"
