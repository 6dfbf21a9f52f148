"""Settings: the one typed model of a run, the zone schema, the command-line flags built
from the model, and the asset manifest. Imports only ``core``."""
