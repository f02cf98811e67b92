"""The gateway's configuration: one YAML file parsed into frozen, typed objects.

* ``model``: the objects (every field once, with its default);
* ``validate``: the value checks, each problem reported with its key path, all at once;
  the admin console and the Gateway API translation use the same ones;
* ``loader``: the file (YAML) to the model, through those checks;
* ``credentials``: the credential files a route's ``auth`` names, read and checked at load.

The names below are the package's face; importers need not know which module holds one.
"""
from gateway.config.loader import load_config, parse_config, parse_route
from gateway.config.model import *  # noqa: F401,F403
from gateway.config.model import __all__ as _model_names
from gateway.config.validate import ConfigError, ca_bundle_problem, regex_problem

__all__ = ["ConfigError", "ca_bundle_problem", "load_config", "parse_config", "parse_route", "regex_problem",
           *_model_names]
