"""``python -m mbroker``: the ``mbroker`` command (:func:`mbroker.cli.main.main`)."""

from mbroker.cli.main import main

if __name__ == "__main__":
    main()
