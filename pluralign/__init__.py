"""pluralign: personalized and pluralistic alignment.

The library: preference records, encoders, reward models, policies, fairness metrics and the
LanceDB store. It never imports the service or the command line.
"""

__version__ = "0.1.0"
