"""The SMART-on-FHIR launch view: the referral work queue a coordinator opens inside the EHR.

`create_app(config)` builds the Flask app over the store; `load_config` reads its configuration
(a YAML file and the environment). `referral-adapter serve` runs it under waitress;
`referral-adapter demo` runs it on synthetic data behind a demo sign-in.
"""

from smart_launch.app import create_app
from smart_launch.config import Issuer, ViewConfig, load_config

__all__ = ["Issuer", "ViewConfig", "create_app", "load_config"]
