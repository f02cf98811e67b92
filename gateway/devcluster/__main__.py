"""``python -m gateway.devcluster up|remove-service|restore-service ...`` (see ``cli``)."""
import argparse
import sys

from .cli import add_arguments, main

parser = argparse.ArgumentParser(prog="python -m gateway.devcluster",
                                 description="Run a local Kubernetes cluster for the gateway.")
add_arguments(parser)
sys.exit(main(parser.parse_args()))
