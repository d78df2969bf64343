"""``python -m fairseq_ext`` prints the directory to pass to fairseq's ``--user-dir``."""

from pathlib import Path

print(Path(__file__).resolve().parent)
