"""Developer tooling that is not part of the app: the README's screenshot renderers."""
