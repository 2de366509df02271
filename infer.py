"""Fuse images: ``python infer.py`` (built-in example), ``inputs=[a.png,b.png]``, ``input_dir=folder`` or ``mode=...``."""

from fusiondiff.cli.main import infer_main

if __name__ == "__main__":
    infer_main()
