"""``python -m cardmill`` runs the command line."""

from .cli import main

main()
