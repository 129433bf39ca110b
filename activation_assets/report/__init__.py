"""The HTML growth-accounting report, read off the stored relations."""
