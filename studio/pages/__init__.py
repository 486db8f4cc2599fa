"""The new-run wizard's pages (Qt for Python wizard style: registerField, validatePage)."""
