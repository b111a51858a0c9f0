"""Sites: names for every place in the model where a value can be read or changed."""

from circuits.sites.hook_point import HookPoint
from circuits.sites.index import SiteIndex, SiteInfo

__all__ = ["HookPoint", "SiteIndex", "SiteInfo"]
