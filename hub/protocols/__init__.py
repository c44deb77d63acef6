"""Client protocols: each module or subpackage is a wire format plus its routes over ``hub.core``."""
