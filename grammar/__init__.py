"""The .nas grammar, its parser and the AST (no torch, no networkx)."""
