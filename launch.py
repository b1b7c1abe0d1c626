"""The one entry point in a checkout: ``python launch.py --help`` (``pssnet_dcff/cli.py``)."""

from pssnet_dcff.cli import run

if __name__ == "__main__":
    run()
