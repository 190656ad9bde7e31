"""What the harnesses that run real daemons as an unprivileged user share."""

from __future__ import annotations

import pwd
import stat
from pathlib import Path


def ensure_traversable(path: Path, account: pwd.struct_passwd) -> None:
    """Add the search (x) bit, for the class ``account`` falls in, to ancestors of ``path``
    that lack it, so a daemon running as ``account`` can open its own files there. Only x,
    never r: directory listings stay private. Typically this touches a 0700 mkdtemp dir."""
    for ancestor in path.parents:
        st = ancestor.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            ancestor.chmod(stat.S_IMODE(st.st_mode) | bit)
