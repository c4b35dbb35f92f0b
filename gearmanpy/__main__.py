"""``python -m gearmanpy``: the ``gearmanpy`` command line."""

from gearmanpy.cli import main

if __name__ == "__main__":
    main(prog_name="gearmanpy")
