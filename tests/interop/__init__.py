"""Interop tests against real gearmand and third-party Gearman clients."""
