"""The compiler: AST -> networkx IR -> passes; never imports torch."""
