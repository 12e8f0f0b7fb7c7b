"""crmlab: a Jupyter workbench for the six-step CRM method on real customer data."""

__version__ = "0.1.0"
