"""circuitbook: the thin library behind the book. One module per idea; layers and where things go: book/design.md."""

from circuitbook.config import PROFILES, Profile, device, get_profile, seed_everything, set_threads

__all__ = ["PROFILES", "Profile", "device", "get_profile", "seed_everything", "set_threads"]
__version__ = "0.1.0"
