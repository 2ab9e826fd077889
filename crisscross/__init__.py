"""CrissCross: self-supervised audio-visual learning with relaxed temporal synchronicity."""

import os

__version__ = "0.1.0"

# MLflow prints "View run ... at: <tracking URI>/#/..." to stdout whenever a run on a tracking
# server ends, with the URI as given: a password in it (http://user:password@host) would land in
# every job's log. Every process that runs this package's code imports this module first; the
# commands print their own pointers to the run, with credentials masked.
os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
