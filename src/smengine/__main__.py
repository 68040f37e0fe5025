"""``python -m smengine``: the command-line interface (the same as the ``smengine`` command)."""

from smengine.cli import main

if __name__ == "__main__":
    main()
