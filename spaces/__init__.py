"""The bundled search spaces (`.nas` files)."""
