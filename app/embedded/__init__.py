"""Real servers from PyPI wheels, no Docker: PostgreSQL, Valkey and Temporal for `wfs dev`/tests.

Each server keeps all of its state in one folder (by default `.wfs/pg/`, `.wfs/valkey/`,
`.wfs/temporal/` in the project) and has the same synchronous API:

    pg = EmbeddedPostgres(state_dir / "pg")
    db_url = pg.start()         # postgresql+asyncpg://postgres@/wfs?host=<socket dir>&port=5432
    vk = EmbeddedValkey(state_dir / "valkey")
    redis_url = vk.start()      # redis://127.0.0.1:<port>/0
    tp = EmbeddedTemporal(state_dir / "temporal", search_attributes={"WfsTenant": "Keyword"})
    address = tp.start()        # 127.0.0.1:<port>; tp.ui_url -> http://127.0.0.1:<ui port>
    ...
    tp.stop(); vk.stop(); pg.stop()   # idempotent, no server process left behind

`start(timeout=60)` blocks until the server answers and raises `EmbeddedServerError` (with
the tail of the server's log) otherwise; `pid`, `is_running()` and `url` describe it. Each
server runs as a child in its own session with a parent-death signal, so it dies with the
Python process even on SIGKILL; a server left by a crashed run is stopped on the next start,
and a state dir in use by another live process is refused. TCP ports left as None are
chosen free, remembered in `<state dir>/ports.json` and preferred next time. Safe to call
from any thread (children are forked on one long-lived spawner thread).
"""

from app.embedded.postgres import EmbeddedPostgres
from app.embedded.process import EmbeddedServerError
from app.embedded.temporal import EmbeddedTemporal, SearchAttributeConflict
from app.embedded.valkey import EmbeddedValkey

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "EmbeddedTemporal",
    "EmbeddedValkey",
    "SearchAttributeConflict",
]
