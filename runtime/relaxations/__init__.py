"""Relaxation plugins, one module each."""
