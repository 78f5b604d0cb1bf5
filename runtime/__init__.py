"""The runtime: ops, supernet lowering, relaxations, selectors, search loop (torch)."""
