"""``python -m ptl_cli`` runs the CLI; torchrun uses this form (``torchrun -m ptl_cli prune``)."""

from ptl_cli.cli import main

if __name__ == "__main__":
    main()
