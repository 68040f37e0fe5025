"""Private compiled kernels. The C-level API here may change without notice.

Kernels trust their inputs: the public wrappers in :mod:`smengine` validate dtypes,
contiguity, shapes and ranges before calling them.
"""
