"""Who is who: users and roles, the rules of who may do what, the class limits, and the sign-in modes.

Pure rules with no Streamlit and no SQL: the store and the jobs ask `require(user, action, owner)` before they
change anything, the pages ask `may(...)` to decide which controls to draw, and fercore/ui/signin.py turns a
browser into a `User` through `identity`.
"""
from fercore.auth.limits import Limits, check_queue, check_sweep
from fercore.auth.rules import Action, Forbidden, may, require
from fercore.auth.users import CLI, LEGACY_OWNER, PERSONAL, SYSTEM, Role, User, safe_name, validate_name

__all__ = ["Action", "CLI", "Forbidden", "LEGACY_OWNER", "Limits", "PERSONAL", "Role", "SYSTEM", "User", "check_queue",
           "check_sweep", "may", "require", "safe_name", "validate_name"]
