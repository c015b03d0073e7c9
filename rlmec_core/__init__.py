"""RLMEC core library: pure kernels and stage functions of the RLMEC pipeline.

Everything here is importable and testable without Snakemake; the workflow's stage scripts
(``workflow/scripts``) and the ``rlmec`` command line are thin callers of this package.
"""

__version__ = "0.1.0"
