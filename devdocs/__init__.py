"""Tooling for the documentation site (docs/, mkdocs.yml): the MkDocs hook, the configuration
reference generator and the reader of the pages' code examples. Dev tooling: pipeline code never
imports it."""
